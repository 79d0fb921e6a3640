# AWS and the sandbox alike: a temporary instance (with packer's temporary key pair and security
# group), reached over SSH; every provisioner in build.pkr.hcl runs there. On the sandbox the
# instance is a container on a loopback address, and var.sandbox_endpoint points packer at the
# sandbox's EC2 API (on AWS it is empty: AWS's own endpoints and credential checks).
source "amazon-ebs" "aws" {
  region          = var.region
  source_ami      = var.source_image_id
  instance_type   = var.instance_type
  ami_name        = local.ami_name
  ami_description = "${var.image_name} ${var.image_version} (image-assets)"
  communicator    = "ssh"
  ssh_username    = var.ssh_username
  ssh_timeout     = "15m"

  custom_endpoint_ec2        = var.sandbox_endpoint
  skip_credential_validation = var.sandbox_endpoint != ""
  skip_metadata_api_check    = var.sandbox_endpoint != ""
  skip_region_validation     = var.sandbox_endpoint != ""

  tags            = var.tags
  run_tags        = var.tags
  run_volume_tags = var.tags
  snapshot_tags   = var.tags
}

# Local docker: commits a container image from the parent image, running the real content.
# Every parent is an image in the local daemon (a vendor image present there, or a layer's image id,
# packer's artifact id), and no registry is reachable: never pull.
source "docker" "local" {
  image  = var.source_image_id
  pull   = false
  commit = true
  # packer's default run arguments plus the host's network (the daemon runs with --bridge=none, so
  # containers have no network of their own); never --privileged (sysctl would reach the host's kernel).
  # The labels tie the build container to its run, so a dead run's container can be found and removed.
  run_command = [
    "-d", "-i", "-t", "--network=host",
    "--label=ManagedBy=image-assets", "--label=ImageName=${var.image_name}",
    "--label=DagsterRunId=${lookup(var.tags, "DagsterRunId", "")}",
    "--entrypoint=/bin/sh", "--", "{{.Image}}",
  ]
  changes = concat(
    [for k, v in var.tags : "LABEL ${k}=${jsonencode(v)}"],
    [
      "LABEL org.opencontainers.image.title=${jsonencode(var.image_name)}",
      "LABEL org.opencontainers.image.version=${jsonencode(var.image_version)}",
      "LABEL org.opencontainers.image.description=${jsonencode("${var.image_name} ${var.image_version} (image-assets local)")}",
      # `ENTRYPOINT []` keeps packer's --entrypoint=/bin/sh; [""] clears it, so `docker run IMAGE CMD` runs CMD.
      "ENTRYPOINT [\"\"]",
      "CMD [\"/bin/bash\"]",
    ],
  )
}
