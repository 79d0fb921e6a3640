# image-assets drop-in: copy this file (a copy, not a link) next to your own *.pkr.hcl files to
# build them with image-assets. It declares the variables every build injects (a JSON var-file
# written per build); remove any declaration of these from your files (a variable declared twice
# fails). Your template's one amazon-ebs source builds on the sandbox and on AWS alike; on the
# sandbox its instance is a container reached over SSH. The edits your template needs are in
# docs/templates.md. Check the result with
#   python -m image_assets check-template DIR [--image NAME]
#
# Below this line the file is packer/common/injected.pkr.hcl, the declarations the project's own
# templates use (a test keeps them equal).

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
