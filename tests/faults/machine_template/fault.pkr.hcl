# Test template for the fault suite on a machine: one amazon-ebs source whose instance is a container
# on the sandbox (a Debian AMI), reached over SSH; its shell provisioner runs inside the instance.
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
variable "sleep_seconds" {
  type    = number
  default = 0
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
  tags                       = var.tags
  run_tags                   = var.tags
  run_volume_tags            = var.tags
  snapshot_tags              = var.tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]

  provisioner "shell" {
    environment_vars = ["PAYLOAD=${var.payload}", "SLEEP=${var.sleep_seconds}"]
    inline = [
      "echo \"building-now on $(hostname)\"",
      "printf '%s' \"$PAYLOAD\" | sudo tee /etc/fault-payload >/dev/null",
      "sleep \"$SLEEP\"",
    ]
  }

  post-processor "manifest" {
    output = var.manifest_path
  }
}
