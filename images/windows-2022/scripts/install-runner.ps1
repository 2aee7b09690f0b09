# The GitHub Actions runner at C:\actions-runner, checksum verified.
# Environment (set by the Packer provisioner): RUNNER_VERSION, RUNNER_SHA256.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

$version = $env:RUNNER_VERSION
$expected = $env:RUNNER_SHA256
if (-not $version -or -not $expected) {
    throw 'RUNNER_VERSION and RUNNER_SHA256 must be set'
}

$zip = "actions-runner-win-x64-$version.zip"
$url = "https://github.com/actions/runner/releases/download/v$version/$zip"
$download = Join-Path $env:TEMP $zip
Write-Output "downloading $url"
Invoke-WebRequest -Uri $url -OutFile $download -UseBasicParsing

$actual = (Get-FileHash -Algorithm SHA256 -LiteralPath $download).Hash
if ($actual -ne $expected.ToUpperInvariant()) {
    throw "checksum mismatch for ${zip}: expected $expected, got $actual"
}

$runnerDir = 'C:\actions-runner'
New-Item -ItemType Directory -Force -Path $runnerDir | Out-Null
Expand-Archive -LiteralPath $download -DestinationPath $runnerDir -Force
Remove-Item -LiteralPath $download -Force
Set-Content -LiteralPath (Join-Path $runnerDir '.runner-version') -Value $version
Write-Output "actions/runner $version installed in $runnerDir"
