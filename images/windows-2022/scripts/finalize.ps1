# Last step of the build: no build credential and no WinRM in the template, then sysprep /generalize with
# cloudbase-init's Unattend.xml (its specialize pass runs cloudbase-init with cloudbase-init-unattend.conf).
# Packer shuts the VM down afterwards and converts it to a template.
$ErrorActionPreference = 'Stop'

# The build password (winrm_password) must not survive: give Administrator a random one nobody knows.
$bytes = New-Object byte[] 32
[Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
$random = [Convert]::ToBase64String($bytes) + 'aA1!'
Set-LocalUser -Name 'Administrator' -Password (ConvertTo-SecureString -String $random -AsPlainText -Force)
Remove-Variable -Name 'random', 'bytes'
$winlogon = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon'
Set-ItemProperty -Path $winlogon -Name 'AutoAdminLogon' -Value '0'
Remove-ItemProperty -Path $winlogon -Name 'DefaultPassword' -ErrorAction SilentlyContinue

# WinRM was for the build only. This session keeps working; no clone starts the service or accepts 5985.
Set-Service -Name 'WinRM' -StartupType Disabled
Get-NetFirewallRule -Name 'packer-winrm-http', 'WINRM-HTTP-In-TCP*' -ErrorAction SilentlyContinue |
    Disable-NetFirewallRule

$conf = Join-Path $env:ProgramFiles 'Cloudbase Solutions\Cloudbase-Init\conf'
$unattend = Join-Path $conf 'Unattend.xml'
$sysprep = Join-Path $env:SystemRoot 'System32\Sysprep\sysprep.exe'
Write-Output 'running sysprep /generalize'
$proc = Start-Process -FilePath $sysprep -Wait -PassThru `
    -ArgumentList @('/generalize', '/oobe', '/quiet', '/quit', "/unattend:`"$unattend`"")
if ($proc.ExitCode -ne 0) {
    throw "sysprep failed with exit code $($proc.ExitCode) (see C:\Windows\System32\Sysprep\Panther)"
}
# 7 = IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE
$state = (Get-ItemProperty -Path 'HKLM:\SYSTEM\Setup\Status\SysprepStatus').GeneralizationState
if ($state -ne 7) {
    throw "sysprep did not generalize the image (GeneralizationState=$state)"
}
Write-Output 'sysprep done; Packer shuts the VM down and converts it to a template'
