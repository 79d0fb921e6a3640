# Variables of the Azure Windows template. Every layer (global, product, service) builds from this
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
  type        = string
  default     = "Standard_D2s_v3"
  description = "VM size."
}

variable "winrm_username" {
  type    = string
  default = "packer"
}

variable "subscription_id" {
  type    = string
  default = env("ARM_SUBSCRIPTION_ID")
}

variable "resource_group" {
  type        = string
  default     = "images"
  description = "Resource group that receives the managed images."
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "Environment for the provisioners (e.g. a package-repository token)."
}

locals {
  packer_dir      = abspath("${path.root}/../..")
  scripts_dir     = "${local.packer_dir}/scripts/windows"
  image_full_name = "${var.image_name}-${var.image_version}"
  secret_env      = [for k, v in var.secret_env : "${k}=${v}"]
  build_env       = ["IMAGE_NAME=${var.image_name}", "IMAGE_VERSION=${var.image_version}", "SOURCE_IMAGE_ID=${var.source_image_id}"]

  # source_image_id: "Publisher:Offer:Sku:Version" (vendor) or a managed image id (parent layer).
  urn         = split(":", var.source_image_id)
  marketplace = length(local.urn) == 4
  image_path  = split("/", var.source_image_id)
}
