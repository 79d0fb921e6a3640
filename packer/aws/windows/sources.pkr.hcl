# AWS: a temporary instance (temporary key pair and security group) reached over WinRM
# HTTPS, set up by the user data below; packer reads the Administrator password with the key pair.
source "amazon-ebs" "aws" {
  region          = var.region
  source_ami      = var.source_image_id
  instance_type   = var.instance_type
  ami_name        = local.ami_name
  ami_description = "${var.image_name} ${var.image_version} (image-assets)"
  user_data       = format("<powershell>\n%s\n</powershell>\n", file("${local.scripts_dir}/bootstrap/winrm-https.ps1"))
  communicator    = "winrm"
  winrm_username  = var.winrm_username
  winrm_port      = 5986
  winrm_use_ssl   = true
  winrm_insecure  = true
  winrm_timeout   = "30m"

  # The sandbox builds Windows images without running this template (no machine runs Windows
  # there), so this source only ever talks to AWS; the endpoint is here for one contract.
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = var.sandbox_endpoint != ""
  skip_metadata_api_check    = var.sandbox_endpoint != ""
  skip_region_validation     = var.sandbox_endpoint != ""

  tags            = var.tags
  run_tags        = var.tags
  run_volume_tags = var.tags
  snapshot_tags   = var.tags
}
