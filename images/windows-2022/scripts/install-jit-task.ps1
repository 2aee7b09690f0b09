# The credential hand-over of images/guest-contract.md on Windows. Installs run-jit.ps1 and
# setup-runner-account.ps1 and runs the latter: it creates the local user ghrunner and registers the scheduled
# task ActionsRunnerJit, which at startup runs run-jit.ps1 as ghrunner (not SYSTEM): it waits for the JIT config
# file, runs the runner once and shuts the VM down. SetupComplete.cmd runs setup-runner-account.ps1 again, as
# SYSTEM, once in every clone when Windows setup has finished (a clone has a new machine SID, see that script).
# Environment (set by the Packer provisioner): FILES_DIR.
$ErrorActionPreference = 'Stop'
$files = $env:FILES_DIR
if (-not $files) {
    throw 'FILES_DIR must be set'
}

$jitDir = 'C:\ProgramData\actions-runner-jit'
$setupDir = 'C:\ProgramData\actions-runner-setup'
New-Item -ItemType Directory -Force -Path $jitDir, $setupDir | Out-Null
# The setup script runs as SYSTEM in every clone: only SYSTEM and Administrators may change it.
& icacls.exe $setupDir /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
if ($LASTEXITCODE -ne 0) {
    throw "icacls failed with exit code $LASTEXITCODE"
}
$setupScript = Join-Path $setupDir 'setup-runner-account.ps1'
Copy-Item -LiteralPath (Join-Path $files 'setup-runner-account.ps1') -Destination $setupScript -Force
Copy-Item -LiteralPath (Join-Path $files 'run-jit.ps1') -Destination (Join-Path $jitDir 'run-jit.ps1') -Force

# Once in every clone, as SYSTEM, after sysprep's specialize and OOBE passes.
$setupScripts = Join-Path $env:SystemRoot 'Setup\Scripts'
New-Item -ItemType Directory -Force -Path $setupScripts | Out-Null
$setupLog = Join-Path $setupDir 'setup.log'
Set-Content -LiteralPath (Join-Path $setupScripts 'SetupComplete.cmd') -Encoding Ascii -Value @(
    '@echo off',
    'rem The runner user ghrunner and its task ActionsRunnerJit, for this clone (images/guest-contract.md).',
    "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$setupScript`" -StartTask >> `"$setupLog`" 2>&1"
)

& $setupScript
Write-Output 'run-jit.ps1, setup-runner-account.ps1 and SetupComplete.cmd installed'
