# Azure: a temporary VM in a temporary resource group, reached over SSH; the result is a
# managed image that the next layer uses as its source (custom_managed_image_*).
source "azure-arm" "azure" {
  subscription_id = var.subscription_id
  location        = var.region
  vm_size         = var.instance_type
  os_type         = "Linux"

  image_publisher = local.marketplace ? local.urn[0] : null
  image_offer     = local.marketplace ? element(local.urn, 1) : null
  image_sku       = local.marketplace ? element(local.urn, 2) : null
  image_version   = local.marketplace ? element(local.urn, 3) : null

  custom_managed_image_name                = local.marketplace ? null : element(local.image_path, length(local.image_path) - 1)
  custom_managed_image_resource_group_name = local.marketplace ? null : element(local.image_path, 4)

  managed_image_name                = local.image_full_name
  managed_image_resource_group_name = var.resource_group

  communicator = "ssh"
  ssh_username = var.ssh_username
  azure_tags   = var.tags
}
