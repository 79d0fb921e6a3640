# Global Windows layer: CIS-style baseline. Password/lockout policy, SMBv1 off, advanced audit
# policy, firewall on for every profile. Needs a restart afterwards (SMBv1 removal).
$ErrorActionPreference = 'Stop'

# Password and lockout policy for local accounts (CIS 1.1.x, 1.2.x; PCI-DSS 8.3).
net accounts /minpwlen:14 /maxpwage:365 /minpwage:1 /uniquepw:24 /lockoutthreshold:5 /lockoutduration:15 /lockoutwindow:15
if ($LASTEXITCODE -ne 0) { throw "net accounts failed ($LASTEXITCODE)" }

# Complexity, reversible encryption and the guest account are only settable via secedit.
$inf = Join-Path $env:TEMP 'image-assets-secpol.inf'
$db = Join-Path $env:TEMP 'image-assets-secpol.sdb'
@'
[Unicode]
Unicode=yes
[System Access]
PasswordComplexity = 1
ClearTextPassword = 0
LSAAnonymousNameLookup = 0
EnableGuestAccount = 0
[Version]
signature="$CHICAGO$"
Revision=1
'@ | Set-Content -Path $inf -Encoding Unicode
secedit /configure /db $db /cfg $inf /areas SECURITYPOLICY /quiet
if ($LASTEXITCODE -ne 0) { throw "secedit failed ($LASTEXITCODE)" }
Remove-Item $inf, $db -ErrorAction SilentlyContinue

# SMBv1 off, server and client (CIS 18.3.2, 18.3.3).
Set-SmbServerConfiguration -EnableSMB1Protocol $false -Force
$smb1 = Get-WindowsOptionalFeature -Online -FeatureName SMB1Protocol -ErrorAction SilentlyContinue
if ($smb1 -and $smb1.State -eq 'Enabled') { Disable-WindowsOptionalFeature -Online -FeatureName SMB1Protocol -NoRestart | Out-Null }
sc.exe config mrxsmb10 start= disabled | Out-Null

# Advanced audit policy (CIS 17.x); subcategory settings override the legacy categories.
Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Lsa' -Name SCENoApplyLegacyAuditPolicy -Value 1 -Type DWord
$audit = @{
  'Credential Validation'     = 'enable', 'enable'
  'Security Group Management' = 'enable', 'disable'
  'User Account Management'   = 'enable', 'enable'
  'Process Creation'          = 'enable', 'disable'
  'Logon'                     = 'enable', 'enable'
  'Logoff'                    = 'enable', 'disable'
  'Special Logon'             = 'enable', 'disable'
  'Audit Policy Change'       = 'enable', 'disable'
  'Sensitive Privilege Use'   = 'enable', 'enable'
  'Security State Change'     = 'enable', 'disable'
  'System Integrity'          = 'enable', 'enable'
}
foreach ($sub in $audit.Keys) {
  auditpol /set /subcategory:"$sub" /success:$($audit[$sub][0]) /failure:$($audit[$sub][1]) | Out-Null
  if ($LASTEXITCODE -ne 0) { throw "auditpol failed for '$sub' ($LASTEXITCODE)" }
}

# Firewall on for all profiles, inbound blocked unless allowed, drops logged (CIS 9.x).
Set-NetFirewallProfile -Profile Domain, Private, Public -Enabled True -DefaultInboundAction Block `
  -DefaultOutboundAction Allow -LogBlocked True -LogMaxSizeKilobytes 16384 `
  -LogFileName '%SystemRoot%\System32\LogFiles\Firewall\pfirewall.log'
Write-Output 'global-hardening: done'
