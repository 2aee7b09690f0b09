# cloudbase-init, configured for the Proxmox VE cloud-init drive (ConfigDrive v2 for Windows guests, or NoCloud
# with citype=nocloud). Its cloud-config plugin handles the dispatcher's write_files of the JIT config.
# Environment (set by the Packer provisioner): CLOUDBASE_INIT_URL, CLOUDBASE_INIT_SHA256, FILES_DIR.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12

$url = $env:CLOUDBASE_INIT_URL
$expected = $env:CLOUDBASE_INIT_SHA256
$files = $env:FILES_DIR
if (-not $url -or -not $expected -or -not $files) {
    throw 'CLOUDBASE_INIT_URL, CLOUDBASE_INIT_SHA256 and FILES_DIR must be set'
}

$msi = Join-Path $env:TEMP 'CloudbaseInitSetup_x64.msi'
Write-Output "downloading $url"
Invoke-WebRequest -Uri $url -OutFile $msi -UseBasicParsing
$actual = (Get-FileHash -Algorithm SHA256 -LiteralPath $msi).Hash
if ($actual -ne $expected.ToUpperInvariant()) {
    throw "checksum mismatch for ${url}: expected $expected, got $actual"
}

$log = Join-Path $env:TEMP 'cloudbase-init-install.log'
$proc = Start-Process -FilePath 'msiexec.exe' -Wait -PassThru -ArgumentList @(
    '/i', "`"$msi`"", '/qn', '/norestart', '/l*v', "`"$log`"",
    'RUN_SERVICE_AS_LOCAL_SYSTEM=1', 'LOGGINGSERIALPORTNAME=COM1')
if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 3010) {
    throw "cloudbase-init setup failed with exit code $($proc.ExitCode) (log: $log)"
}
Remove-Item -LiteralPath $msi -Force

$conf = Join-Path $env:ProgramFiles 'Cloudbase Solutions\Cloudbase-Init\conf'
Copy-Item -LiteralPath (Join-Path $files 'cloudbase-init.conf') -Destination (Join-Path $conf 'cloudbase-init.conf') -Force
Copy-Item -LiteralPath (Join-Path $files 'cloudbase-init-unattend.conf') -Destination (Join-Path $conf 'cloudbase-init-unattend.conf') -Force
if (-not (Test-Path -LiteralPath (Join-Path $conf 'Unattend.xml'))) {
    throw "cloudbase-init's sysprep Unattend.xml is missing in $conf"
}
Set-Service -Name 'cloudbase-init' -StartupType Automatic
Write-Output 'cloudbase-init installed and configured'
