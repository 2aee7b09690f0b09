# First logon of the build VM (Autounattend FirstLogonCommands), as Administrator:
# 1. virtio guest tools (all virtio drivers) and the QEMU guest agent from the virtio-win ISO;
# 2. WinRM over HTTP with basic auth, for the Packer build only. scripts/finalize.ps1 disables the
#    service and the firewall rules again before sysprep, so no runner VM listens on WinRM.
$ErrorActionPreference = 'Stop'
Start-Transcript -Path 'C:\Windows\Temp\bootstrap-winrm.log' -Append | Out-Null

function Install-Msi([string]$Path) {
    $log = Join-Path $env:TEMP ((Split-Path -Leaf $Path) + '.log')
    $proc = Start-Process -FilePath 'msiexec.exe' -Wait -PassThru `
        -ArgumentList @('/i', "`"$Path`"", '/qn', '/norestart', '/l*v', "`"$log`"")
    if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 3010) {
        throw "msiexec $Path failed with exit code $($proc.ExitCode) (log: $log)"
    }
}

$virtio = Get-PSDrive -PSProvider FileSystem |
    Where-Object { Test-Path -LiteralPath (Join-Path $_.Root 'virtio-win-gt-x64.msi') } |
    Select-Object -First 1
if (-not $virtio) {
    throw 'virtio-win ISO not found (no drive has virtio-win-gt-x64.msi)'
}
Install-Msi (Join-Path $virtio.Root 'virtio-win-gt-x64.msi')
Install-Msi (Join-Path $virtio.Root 'guest-agent\qemu-ga-x86_64.msi')
Set-Service -Name 'QEMU-GA' -StartupType Automatic
Start-Service -Name 'QEMU-GA'

# WinRM refuses to configure itself on a Public network.
Get-NetConnectionProfile | Set-NetConnectionProfile -NetworkCategory Private

Enable-PSRemoting -Force -SkipNetworkProfileCheck | Out-Null
Set-Item -Path 'WSMan:\localhost\Service\AllowUnencrypted' -Value $true
Set-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -Value $true
Set-Item -Path 'WSMan:\localhost\MaxTimeoutms' -Value 1800000
New-NetFirewallRule -Name 'packer-winrm-http' -DisplayName 'WinRM HTTP (Packer build only)' `
    -Direction Inbound -Protocol TCP -LocalPort 5985 -Action Allow -Profile Any | Out-Null
Set-Service -Name 'WinRM' -StartupType Automatic
Restart-Service -Name 'WinRM'

Stop-Transcript | Out-Null
