# First-boot bootstrap for Packer's WinRM communicator: an HTTPS listener with a throwaway
# self-signed certificate (no plain-HTTP listener). The generalize step resets the machine.
$ErrorActionPreference = 'Stop'
$cert = New-SelfSignedCertificate -CertStoreLocation Cert:\LocalMachine\My -DnsName $env:COMPUTERNAME
Get-ChildItem WSMan:\localhost\Listener | Remove-Item -Recurse -Force
New-Item -Path WSMan:\localhost\Listener -Transport HTTPS -Address * -CertificateThumbPrint $cert.Thumbprint -Force | Out-Null
Set-Item WSMan:\localhost\Service\Auth\Basic -Value $true
Set-Item WSMan:\localhost\MaxTimeoutms -Value 1800000
New-NetFirewallRule -DisplayName 'WinRM HTTPS (image build)' -Direction Inbound -Protocol TCP -LocalPort 5986 -Action Allow | Out-Null
Set-Service -Name WinRM -StartupType Automatic
Restart-Service -Name WinRM
