# GCE: a temporary VM reached over WinRM HTTPS, set up by the startup script below; packer
# creates winrm_username's password through the GCE Windows password reset.
source "googlecompute" "gcp" {
  project_id              = var.project_id
  zone                    = local.zone
  machine_type            = var.instance_type
  source_image            = local.image_source
  source_image_project_id = [local.image_project]
  disk_size               = 50
  image_name              = local.image_full_name
  image_family            = substr(lower(replace(var.image_name, "_", "-")), 0, 63)
  image_description       = substr(jsonencode(var.tags), 0, 2048)
  image_labels            = local.labels
  labels                  = local.labels
  metadata = {
    windows-startup-script-ps1 = file("${local.scripts_dir}/bootstrap/winrm-https.ps1")
  }
  communicator   = "winrm"
  winrm_username = var.winrm_username
  winrm_port     = 5986
  winrm_use_ssl  = true
  winrm_insecure = true
  winrm_timeout  = "30m"
}
