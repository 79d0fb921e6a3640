# Variables the build injects into every template (image_assets writes them into a JSON
# var-file). They are one contract for all clouds and OS families, so they are declared once,
# here, and each template directory links this file in (packer 1.6.6 has no shared modules).

variable "image_name" {
  type        = string
  description = "Catalog name of the image being built, e.g. global-linux."
  validation {
    condition     = length(var.image_name) > 0
    error_message = "The image_name must not be empty."
  }
}

variable "image_version" {
  type        = string
  description = "Version of this build; the AMI is named <image_name>-<image_version>."
}

variable "source_image_id" {
  type        = string
  description = "Parent image in the cloud's own terms: an AMI id, a docker image, an Azure URN or image id, a GCP image."
}

variable "region" {
  type        = string
  description = "Where the image is built: an AWS region, an Azure location or a GCP region."
}

variable "tags" {
  type        = map(string)
  description = "Tags for the image and for every instance, volume and snapshot the build creates."
}

variable "sandbox_endpoint" {
  type        = string
  default     = ""
  description = "EC2 endpoint of the sandbox (the local emulator); empty on AWS. An amazon-ebs source sets custom_endpoint_ec2 to it."
}

variable "input_dirs" {
  type        = map(string)
  default     = {}
  description = "Checkouts of the image's input git repos at their tags (repo name -> path on the build host)."
}

variable "content_dirs" {
  type        = map(string)
  default     = {}
  description = "The image's provisioning content (catalog field `content`): name -> absolute path on the build host."
}

variable "manifest_path" {
  type        = string
  default     = "manifest.json"
  description = "Where the manifest post-processor writes (it appends, so give each build its own)."
}
