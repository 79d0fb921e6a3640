# Variables of the AWS Windows template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl,
# linked from packer/common.

# --- Layer variables (set per image in the catalog) ---

variable "scripts" {
  type        = list(string)
  default     = []
  description = "PowerShell scripts under packer/scripts/windows to run, in order."
  validation {
    condition     = length([for s in var.scripts : s if length(split("/", s)) > 1]) == 0
    error_message = "The scripts must be file names under packer/scripts/windows, without directories."
  }
}

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

variable "winrm_username" {
  type    = string
  default = "Administrator"
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. a package-repository token)."
}

locals {
  packer_dir  = abspath("${path.root}/../..")
  scripts_dir = "${local.packer_dir}/scripts/windows"
  ami_name    = "${var.image_name}-${var.image_version}"
  secret_env  = [for k, v in var.secret_env : "${k}=${v}"]
  build_env   = ["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"]
}
