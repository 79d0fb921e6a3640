# Variables of the AWS Windows template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Windows template shares (scripts, secret_env) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

variable "winrm_username" {
  type    = string
  default = "Administrator"
}

locals {
  ami_name = "${var.image_name}-${var.image_version}"
}
