# Variables of the Azure Windows template. Every layer (global, product, service) builds from this
# one template; layers differ only by the values below and the provisioning content they name.

# The injected variables (image_name, source_image_id, tags, ...) are in injected.pkr.hcl and the
# layer variables every Windows template shares (scripts, secret_env) in layer.pkr.hcl, both
# linked from packer/common.

# --- Variables of this cloud ---

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

locals {
  image_full_name = "${var.image_name}-${var.image_version}"

  # source_image_id: "Publisher:Offer:Sku:Version" (vendor) or a managed image id (parent layer).
  urn         = split(":", var.source_image_id)
  marketplace = length(local.urn) == 4
  image_path  = split("/", var.source_image_id)
}
