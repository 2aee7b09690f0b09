# C:\ProgramData\actions-runner-jit\run-jit.ps1 — run by the scheduled task ActionsRunnerJit at startup as the
# local user ghrunner, not SYSTEM (setup-runner-account.ps1, images/guest-contract.md). Waits for the JIT config
# file that the dispatcher writes (cloudbase-init write_files, or the QEMU guest agent's file-write, both as
# SYSTEM; the directory lets only SYSTEM and ghrunner read it), reads and deletes it, runs the GitHub Actions
# runner once and shuts the VM down (ghrunner holds the shutdown right), whether the runner succeeded or failed.
#
# The config is handed to the runner in ACTIONS_RUNNER_INPUT_JITCONFIG (the runner's environment equivalent
# of `run.cmd --jitconfig <cfg>`, removed from its environment once read), so it is never on a command line.
# The secret is never written to the log.
$ErrorActionPreference = 'Stop'

$jitDir = 'C:\ProgramData\actions-runner-jit'
$jitFile = Join-Path $jitDir 'jitconfig'
$runnerDir = 'C:\actions-runner'
$logFile = Join-Path $jitDir 'run-jit.log'

function Write-Log([string]$Message) {
    $line = '{0:u} {1}' -f (Get-Date), $Message
    Add-Content -LiteralPath $logFile -Value $line
}

$exitCode = 1
try {
    # Not while Windows setup (specialize/OOBE after sysprep) is still going on: it reboots the VM.
    while ($true) {
        $setup = Get-ItemProperty -Path 'HKLM:\SYSTEM\Setup' -ErrorAction SilentlyContinue
        if ($setup -and $setup.SystemSetupInProgress -eq 0 -and $setup.OOBEInProgress -eq 0) {
            break
        }
        Start-Sleep -Seconds 2
    }

    Write-Log "waiting for $jitFile"
    $lastSize = -1
    while ($true) {
        $item = Get-Item -LiteralPath $jitFile -ErrorAction SilentlyContinue
        if ($item -and $item.Length -gt 0) {
            # The writer may still be writing: read only once the size has settled.
            if ($item.Length -eq $lastSize) {
                break
            }
            $lastSize = $item.Length
        }
        Start-Sleep -Seconds 2
    }

    $config = ([IO.File]::ReadAllText($jitFile)).Trim()
    Remove-Item -LiteralPath $jitFile -Force
    if (-not $config) {
        throw "the JIT config in $jitFile was empty"
    }
    Write-Log "JIT config read ($($config.Length) bytes) and deleted; starting the runner"

    $env:ACTIONS_RUNNER_INPUT_JITCONFIG = $config
    Remove-Variable -Name config
    Push-Location -LiteralPath $runnerDir
    try {
        & (Join-Path $runnerDir 'run.cmd')
        $exitCode = $LASTEXITCODE
    }
    finally {
        Pop-Location
        Remove-Item -Path 'Env:\ACTIONS_RUNNER_INPUT_JITCONFIG' -ErrorAction SilentlyContinue
    }
    Write-Log "runner exited with code $exitCode"
}
catch {
    Write-Log "error: $($_.Exception.Message)"
}
finally {
    Write-Log 'shutting down'
    & shutdown.exe /s /t 0 /f
}
exit $exitCode
