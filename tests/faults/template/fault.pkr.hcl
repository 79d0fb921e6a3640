# Test template for the fault suite: one amazon-ebs source, communicator ssh. On the sandbox's Debian
# AMIs its instance is a container: the shell provisioner echoes `building-now` and sleeps inside it
# (a window to cancel or crash in). A shell-local step on the build host then echoes secrets, writes
# hostile values to a file and fails on demand; tag_image = false makes an AMI without the build's tags.
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
variable "ssh_username" {
  type    = string
  default = "admin"
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
  communicator               = "ssh"
  ssh_username               = var.ssh_username
  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = var.sandbox_endpoint != ""
  skip_metadata_api_check    = var.sandbox_endpoint != ""
  skip_region_validation     = var.sandbox_endpoint != ""
  tags                       = local.image_tags
  run_tags                   = var.tags
  run_volume_tags            = var.tags
  snapshot_tags              = local.image_tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]

  # Values travel as environment variables (packer quotes them), never spliced into the script.
  provisioner "shell" {
    environment_vars = ["PAYLOAD=${var.payload}", "SLEEP=${var.sleep_seconds}"]
    inline = [
      "echo \"building-now on $(hostname)\"",
      "printf '%s' \"$PAYLOAD\" | sudo tee /etc/fault-payload >/dev/null",
      "sleep \"$SLEEP\"",
    ]
  }

  provisioner "shell-local" {
    environment_vars = [
      "PAYLOAD=${var.payload}",
      "REPORT=${var.report_path}",
      "API_TOKEN=${var.api_token}",
      "DB_PASSWORD=${var.db_password}",
      "SECRET_ENV=${join(" ", values(var.secret_env))}",
      "EXIT_CODE=${var.exit_code}",
    ]
    inline = [
      "printf '%s' \"$PAYLOAD\" > \"$REPORT\"",
      "echo \"provisioning with token=$API_TOKEN password=$DB_PASSWORD env=$SECRET_ENV\"",
      "if [ \"$EXIT_CODE\" != 0 ]; then echo \"failed to log in with $API_TOKEN / $DB_PASSWORD\" >&2; exit \"$EXIT_CODE\"; fi",
    ]
  }

  post-processor "manifest" {
    output      = var.manifest_path
    custom_data = { payload = var.payload }
  }
}
