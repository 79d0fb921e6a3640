# Last step of every Windows layer before the cloud's generalize step: record the layer and
# remove build leftovers.
$ErrorActionPreference = 'Stop'
$dir = Join-Path $env:ProgramData 'image-assets'
New-Item -ItemType Directory -Path $dir -Force | Out-Null
Add-Content -Path (Join-Path $dir 'layers.txt') -Value "$env:IMAGE_NAME $env:IMAGE_VERSION $env:SOURCE_IMAGE_ID"
Remove-Item -Path "$env:TEMP\*", "$env:SystemRoot\Temp\*" -Recurse -Force -ErrorAction SilentlyContinue
Write-Output 'finalize: done'
