build {
  sources = ["source.amazon-ebs.aws", "source.amazon-ebs.sandbox"]

  # Sandbox only: a content check, not provisioning. It verifies that this layer's scripts
  # exist (and parse, where pwsh is installed), and prints what the aws source would run.
  provisioner "shell-local" {
    only   = ["amazon-ebs.sandbox"]
    script = var.content_dirs["check"]
    environment_vars = [
      "SCRIPTS_DIR=${local.scripts_dir}",
      "OS_FAMILY=windows",
      "SCRIPTS=${join(" ", var.scripts)}",
      "HELPERS=finalize.ps1",
      "THEN=${length(var.scripts) > 0 ? "windows-restart, then " : ""}generalize with EC2Launch (v2 reset or v1 sysprep)",
    ]
  }

  # One provisioner per script, in order, each with its own environment file.
  dynamic "provisioner" {
    for_each = var.scripts
    labels   = ["powershell"]
    content {
      only             = ["amazon-ebs.aws"]
      script           = "${local.scripts_dir}/${provisioner.value}"
      environment_vars = concat(local.secret_env, local.build_env)
    }
  }

  # Hardening (SMBv1 removal, policies) takes effect after a restart.
  dynamic "provisioner" {
    for_each = length(var.scripts) > 0 ? [var.scripts] : []
    labels   = ["windows-restart"]
    content {
      only                  = ["amazon-ebs.aws"]
      restart_timeout       = "20m"
      restart_check_command = "powershell -Command \"& {Write-Output 'restarted.'}\""
    }
  }

  provisioner "powershell" {
    only             = ["amazon-ebs.aws"]
    script           = "${local.scripts_dir}/finalize.ps1"
    environment_vars = local.build_env
  }

  # Generalize for EC2: EC2Launch v2 (Server 2019+) resets itself; v1 (Server 2016) sysprep.
  provisioner "powershell" {
    only = ["amazon-ebs.aws"]
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
