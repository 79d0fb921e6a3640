build {
  sources = ["source.amazon-ebs.aws"]

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
      restart_timeout       = "20m"
      restart_check_command = "powershell -Command \"& {Write-Output 'restarted.'}\""
    }
  }

  provisioner "powershell" {
    script           = "${local.scripts_dir}/finalize.ps1"
    environment_vars = local.build_env
  }

  # Generalize for EC2: EC2Launch v2 (Server 2019+) resets itself; v1 (Server 2016) sysprep.
  provisioner "powershell" {
    inline = [
      "$v2 = \"$env:ProgramFiles\\Amazon\\EC2Launch\\EC2Launch.exe\"",
      "if (Test-Path $v2) { & $v2 reset --block; exit $LASTEXITCODE }",
      "& \"$env:ProgramData\\Amazon\\EC2-Windows\\Launch\\Scripts\\InitializeInstance.ps1\" -Schedule",
      "& \"$env:ProgramData\\Amazon\\EC2-Windows\\Launch\\Scripts\\SysprepInstance.ps1\" -NoShutdown",
    ]
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
