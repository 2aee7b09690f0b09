# C:\ProgramData\actions-runner-setup\setup-runner-account.ps1 — the local user that runs the GitHub Actions
# runner (images/guest-contract.md): a job gets an unprivileged account, not SYSTEM and no administrator rights.
# Runs as SYSTEM (or an administrator) and is idempotent:
#   - at image build time (install-jit-task.ps1);
#   - once in every clone, from C:\Windows\Setup\Scripts\SetupComplete.cmd when Windows setup has finished
#     after sysprep, with -StartTask. Sysprep gives each clone a new machine SID, hence a new SID for the user:
#     everything that names the user by SID (user rights, ACLs, the task's principal) is applied again here
#     by name, and the task is started.
#
# The user ghrunner: member of Users only, never Administrators. Its password is 32 random bytes made here and
# never written anywhere — not to a file, the log or the task: the task logs on with S4U, which needs no
# password — and every run replaces it. Rights: log on as a batch job (the S4U task) and shut the system down
# (run-jit.ps1 powers the VM off after the job); denied: local, Remote Desktop and network logon.
# C:\ProgramData\actions-runner-jit (the JIT config arrives there): SYSTEM full control, ghrunner modify (it
# reads and deletes the config), nobody else; run-jit.ps1 in it: read and execute for ghrunner.
# C:\actions-runner: modify for ghrunner (the runner writes its state, logs and _work there).
param([switch]$StartTask)
$ErrorActionPreference = 'Stop'

$userName = 'ghrunner'
$taskName = 'ActionsRunnerJit'
$jitDir = 'C:\ProgramData\actions-runner-jit'
$runnerDir = 'C:\actions-runner'
$script = Join-Path $jitDir 'run-jit.ps1'
$system = '*S-1-5-18'

function New-RandomPassword {
    $bytes = New-Object byte[] 32
    [Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
    # One character of each class on top, for the password complexity policy.
    $secure = ConvertTo-SecureString -String ([Convert]::ToBase64String($bytes) + 'aA1!') -AsPlainText -Force
    [Array]::Clear($bytes, 0, $bytes.Length)
    return $secure
}

function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    & $Exe @Arguments | Out-Null
    if ($LASTEXITCODE -ne 0) {
        throw "$Exe $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

# 1. The user, with a fresh random password nobody knows.
$password = New-RandomPassword
if (Get-LocalUser -Name $userName -ErrorAction SilentlyContinue) {
    Set-LocalUser -Name $userName -Password $password -PasswordNeverExpires $true -AccountNeverExpires
    Enable-LocalUser -Name $userName
}
else {
    New-LocalUser -Name $userName -Password $password -PasswordNeverExpires -AccountNeverExpires `
        -UserMayNotChangePassword -Description 'Runs the GitHub Actions runner (task ActionsRunnerJit)' | Out-Null
}
Remove-Variable -Name 'password'
$sid = (Get-LocalUser -Name $userName).SID.Value
try {
    Add-LocalGroupMember -SID 'S-1-5-32-545' -Member $sid
}
catch [Microsoft.PowerShell.Commands.MemberExistsException] {
}
try {
    Remove-LocalGroupMember -SID 'S-1-5-32-544' -Member $sid
}
catch [Microsoft.PowerShell.Commands.MemberNotFoundException] {
}

# 2. User rights: the current holders of each right (secedit export) plus the user.
$rightsToAdd = @(
    'SeBatchLogonRight',
    'SeShutdownPrivilege',
    'SeDenyInteractiveLogonRight',
    'SeDenyRemoteInteractiveLogonRight',
    'SeDenyNetworkLogonRight'
)
$work = Join-Path $env:SystemRoot 'Temp\runner-account-rights'
New-Item -ItemType Directory -Force -Path $work | Out-Null
$exported = Join-Path $work 'exported.inf'
$wanted = Join-Path $work 'wanted.inf'
Invoke-Native 'secedit.exe' @('/export', '/cfg', $exported, '/areas', 'USER_RIGHTS', '/quiet')
$holders = @{}
foreach ($line in Get-Content -LiteralPath $exported) {
    if ($line -match '^\s*(Se\w+)\s*=\s*(.*?)\s*$') {
        $holders[$Matches[1]] = $Matches[2]
    }
}
$inf = @('[Unicode]', 'Unicode=yes', '[Version]', 'signature="$CHICAGO$"', 'Revision=1', '[Privilege Rights]')
foreach ($right in $rightsToAdd) {
    $list = @()
    if ($holders.ContainsKey($right) -and $holders[$right]) {
        $list = @($holders[$right] -split ',')
    }
    if ($list -notcontains "*$sid") {
        $list += "*$sid"
    }
    $inf += "$right = $($list -join ',')"
}
Set-Content -LiteralPath $wanted -Value $inf -Encoding Unicode
Invoke-Native 'secedit.exe' @('/configure', '/db', (Join-Path $work 'rights.sdb'), '/cfg', $wanted,
    '/areas', 'USER_RIGHTS', '/quiet')
Remove-Item -LiteralPath $work -Recurse -Force

# 3. ACLs. The JIT directory: SYSTEM and the user only, nothing inherited; what is already in it (a config
# written before this ran in a clone, the log) inherits that again; run-jit.ps1 is read-only for the user.
New-Item -ItemType Directory -Force -Path $jitDir | Out-Null
Invoke-Native 'icacls.exe' @($jitDir, '/inheritance:r', '/grant:r', "${system}:(OI)(CI)F", "*${sid}:(OI)(CI)M")
Invoke-Native 'icacls.exe' @($jitDir, '/remove:g', '*S-1-5-32-544', '*S-1-5-32-545', '*S-1-3-0', '*S-1-1-0')
foreach ($item in Get-ChildItem -LiteralPath $jitDir -Force) {
    & icacls.exe $item.FullName /reset | Out-Null
    # run-jit.ps1 may have just read and deleted the config: only a file still there must succeed.
    if ($LASTEXITCODE -ne 0 -and (Test-Path -LiteralPath $item.FullName)) {
        throw "icacls $($item.FullName) /reset failed with exit code $LASTEXITCODE"
    }
}
Invoke-Native 'icacls.exe' @($script, '/inheritance:r', '/grant:r', "${system}:F", "*${sid}:RX")
Invoke-Native 'icacls.exe' @($runnerDir, '/grant', "*${sid}:(OI)(CI)M")

# 4. The scheduled task: at startup, as the user (S4U: no stored password, local resources and outbound
# network), not elevated.
$action = New-ScheduledTaskAction -Execute 'powershell.exe' `
    -Argument "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`""
$trigger = New-ScheduledTaskTrigger -AtStartup
$principal = New-ScheduledTaskPrincipal -UserId $userName -LogonType S4U -RunLevel Limited
# No execution time limit: a job may run for hours (the dispatcher enforces the maximum lifetime). One instance.
$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -StartWhenAvailable `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -MultipleInstances IgnoreNew
Register-ScheduledTask -TaskName $taskName -Action $action -Trigger $trigger -Principal $principal `
    -Settings $settings -Force | Out-Null
if ($StartTask) {
    Start-ScheduledTask -TaskName $taskName
}
Write-Output "user $userName and scheduled task $taskName set up"
