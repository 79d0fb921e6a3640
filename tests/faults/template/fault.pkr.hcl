# Test template for the fault suite: the sandbox source only, plus knobs to echo secrets,
# write hostile values to a file, sleep (a window to cancel or crash in) and fail.
variable "image_name" { type = string }
variable "image_version" { type = string }
variable "source_image_id" { type = string }
variable "region" { type = string }
variable "tags" { type = map(string) }
variable "sandbox_endpoint" { type = string }
variable "manifest_path" {
  type    = string
  default = "manifest.json"
}
variable "payload" {
  type    = string
  default = ""
}
variable "report_path" {
  type    = string
  default = "/dev/null"
}
variable "sleep_seconds" {
  type    = number
  default = 0
}
variable "exit_code" {
  type    = number
  default = 0
}
variable "tag_image" {
  type    = bool
  default = true
}
variable "api_token" {
  type      = string
  default   = ""
  sensitive = true
}
variable "db_password" {
  type      = string
  default   = ""
  sensitive = true
}
variable "secret_env" {
  type      = map(string)
  default   = {}
  sensitive = true
}

locals {
  # tag_image = false: an AMI without the build's tags (verification must refuse and remove it).
  image_tags = { for k, v in var.tags : k => v if var.tag_image }
}

source "amazon-ebs" "sandbox" {
  ami_name                   = "${var.image_name}-${var.image_version}"
  source_ami                 = var.source_image_id
  region                     = var.region
  instance_type              = "t3.micro"
  communicator               = "none"
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = true
  skip_metadata_api_check    = true
  skip_region_validation     = true
  tags                       = local.image_tags
  run_tags                   = var.tags
  run_volume_tags            = var.tags
  snapshot_tags              = local.image_tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]

  # Values travel as environment variables (packer quotes them), never spliced into the script.
  provisioner "shell-local" {
    environment_vars = [
      "PAYLOAD=${var.payload}",
      "REPORT=${var.report_path}",
      "API_TOKEN=${var.api_token}",
      "DB_PASSWORD=${var.db_password}",
      "SECRET_ENV=${join(" ", values(var.secret_env))}",
      "SLEEP=${var.sleep_seconds}",
      "EXIT_CODE=${var.exit_code}",
    ]
    inline = [
      "printf '%s' \"$PAYLOAD\" > \"$REPORT\"",
      "echo \"provisioning with token=$API_TOKEN password=$DB_PASSWORD env=$SECRET_ENV\"",
      "echo \"building-now $$\"",
      "sleep \"$SLEEP\"",
      "if [ \"$EXIT_CODE\" != 0 ]; then echo \"failed to log in with $API_TOKEN / $DB_PASSWORD\" >&2; exit \"$EXIT_CODE\"; fi",
    ]
  }

  post-processor "manifest" {
    output      = var.manifest_path
    custom_data = { payload = var.payload }
  }
}
