# The credential hand-over of images/guest-contract.md on Windows: the scheduled task ActionsRunnerJit
# (at startup, as SYSTEM) runs C:\ProgramData\actions-runner-jit\run-jit.ps1, which waits for the JIT config
# file, runs the runner once and shuts the VM down.
# Environment (set by the Packer provisioner): FILES_DIR.
$ErrorActionPreference = 'Stop'
$files = $env:FILES_DIR
if (-not $files) {
    throw 'FILES_DIR must be set'
}

$jitDir = 'C:\ProgramData\actions-runner-jit'
New-Item -ItemType Directory -Force -Path $jitDir | Out-Null
# SYSTEM and Administrators only (no inherited access for Users): the config file is a credential.
& icacls.exe $jitDir /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
if ($LASTEXITCODE -ne 0) {
    throw "icacls failed with exit code $LASTEXITCODE"
}
Copy-Item -LiteralPath (Join-Path $files 'run-jit.ps1') -Destination (Join-Path $jitDir 'run-jit.ps1') -Force

$script = Join-Path $jitDir 'run-jit.ps1'
$action = New-ScheduledTaskAction -Execute 'powershell.exe' `
    -Argument "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`""
$trigger = New-ScheduledTaskTrigger -AtStartup
$principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
# No execution time limit: a job may run for hours (the dispatcher enforces the maximum lifetime).
$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -StartWhenAvailable `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
Register-ScheduledTask -TaskName 'ActionsRunnerJit' -Action $action -Trigger $trigger `
    -Principal $principal -Settings $settings -Force | Out-Null
Write-Output 'scheduled task ActionsRunnerJit registered'
