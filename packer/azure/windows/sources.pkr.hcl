# Azure: a temporary VM in a temporary resource group; azure-arm sets up WinRM over HTTPS with a
# certificate in a temporary key vault. The result is a managed image for the next layer.
source "azure-arm" "azure" {
  subscription_id = var.subscription_id
  location        = var.region
  vm_size         = var.instance_type
  os_type         = "Windows"

  image_publisher = local.marketplace ? local.urn[0] : null
  image_offer     = local.marketplace ? element(local.urn, 1) : null
  image_sku       = local.marketplace ? element(local.urn, 2) : null
  image_version   = local.marketplace ? element(local.urn, 3) : null

  custom_managed_image_name                = local.marketplace ? null : element(local.image_path, length(local.image_path) - 1)
  custom_managed_image_resource_group_name = local.marketplace ? null : element(local.image_path, 4)

  managed_image_name                = local.image_full_name
  managed_image_resource_group_name = var.resource_group

  communicator   = "winrm"
  winrm_username = var.winrm_username
  winrm_use_ssl  = true
  winrm_insecure = true
  winrm_timeout  = "30m"
  azure_tags     = var.tags
}
