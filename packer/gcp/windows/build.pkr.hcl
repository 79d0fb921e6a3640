build {
  sources = ["source.googlecompute.gcp"]

  # One provisioner per script, in order, each with its own environment file.
  dynamic "provisioner" {
    for_each = var.scripts
    labels   = ["powershell"]
    content {
      script           = "${local.scripts_dir}/${provisioner.value}"
      environment_vars = concat(local.secret_env, local.build_env)
    }
  }

  # Hardening (SMBv1 removal, policies) takes effect after a restart.
  dynamic "provisioner" {
    for_each = length(var.scripts) > 0 ? [var.scripts] : []
    labels   = ["windows-restart"]
    content {
      restart_timeout = "20m"
    }
  }

  provisioner "powershell" {
    script           = "${local.scripts_dir}/finalize.ps1"
    environment_vars = local.build_env
  }

  # Generalize for GCE (GCESysprep runs sysprep and leaves the VM for capture).
  provisioner "powershell" {
    inline = ["GCESysprep -no_shutdown"]
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      image_name      = var.image_name
      image_version   = var.image_version
      source_image_id = var.source_image_id
    }
  }
}
