# Test template for the secrets suite: every kind of secret the build hands packer, printed by a
# provisioner (printf, so the shell does not rewrite backslashes), and knobs to fail.
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
variable "exit_code" {
  type    = number
  default = 0
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
variable "keys" {
  type      = list(string)
  default   = []
  sensitive = true
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
  tags                       = var.tags
  run_tags                   = var.tags
  run_volume_tags            = var.tags
  snapshot_tags              = var.tags
}

build {
  sources = ["source.amazon-ebs.sandbox"]

  provisioner "shell-local" {
    environment_vars = [
      "API_TOKEN=${var.api_token}",
      "DB_PASSWORD=${var.db_password}",
      "SECRET_ENV=${lookup(var.secret_env, "PIP_TOKEN", "")}",
      "KEY=${join("", var.keys)}",
      "EXIT_CODE=${var.exit_code}",
    ]
    inline = [
      "printf 'token=%s\\n' \"$API_TOKEN\"",
      "printf 'password=%s\\n' \"$DB_PASSWORD\"",
      "printf 'env=%s\\n' \"$SECRET_ENV\"",
      "printf 'key=%s\\n' \"$KEY\"",
      "if [ \"$EXIT_CODE\" != 0 ]; then printf 'failed to log in with %s / %s\\n' \"$API_TOKEN\" \"$DB_PASSWORD\" >&2; exit \"$EXIT_CODE\"; fi",
    ]
  }

  post-processor "manifest" {
    output = var.manifest_path
  }
}
