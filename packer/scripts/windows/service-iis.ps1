# Service layer example: IIS serving one site, without the default site or version headers.
$ErrorActionPreference = 'Stop'
Install-WindowsFeature -Name Web-Server, Web-Mgmt-Console | Out-Null
Import-Module WebAdministration
if (Get-Website -Name 'Default Web Site') { Remove-Website -Name 'Default Web Site' }
$site = 'C:\inetpub\service'
New-Item -ItemType Directory -Path $site -Force | Out-Null
Set-Content -Path (Join-Path $site 'index.html') -Value '<!doctype html><title>service</title>ok'
New-Website -Name 'service' -PhysicalPath $site -Port 80 -Force | Out-Null
Set-WebConfigurationProperty -PSPath 'MACHINE/WEBROOT/APPHOST' -Filter 'system.webServer/security/requestFiltering' -Name removeServerHeader -Value $true
New-NetFirewallRule -DisplayName 'service HTTP' -Direction Inbound -Protocol TCP -LocalPort 80 -Action Allow | Out-Null
Write-Output 'service-iis: done'
