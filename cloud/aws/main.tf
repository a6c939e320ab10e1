# The rates hosts on AWS EC2: a VPC with one public subnet, a security group
# per role, the operator's key, one instance per host from the official NixOS
# AMI, and the hand-off to the flake's NixOS configurations
# (../modules/install). docs/cloud.md says how to use it.

provider "aws" {
  region = var.region

  default_tags {
    tags = { "rates:deployment" = var.name }
  }
}

module "layout" {
  source = "../modules/layout"
  layout = var.layout
}

locals {
  hosts = module.layout.hosts
}

# The NixOS project's own AMIs (owner 427812963091, https://nixos.org/download/#nixos-amazon),
# the newest of the release the flake pins. The instances boot it only for
# nixos-anywhere to replace it with the flake's configuration.
data "aws_ami" "nixos" {
  owners      = ["427812963091"]
  most_recent = true

  filter {
    name   = "name"
    values = ["nixos/${var.nixos_release}.*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

# --- The network: every host has a public address, which it needs to fetch
# nixos-anywhere's installer and Nix's binary cache, and which the operator
# reaches it at over SSH; the security groups below decide what reaches it.

resource "aws_vpc" "main" {
  cidr_block = module.layout.cidr
  tags       = { Name = var.name }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "main" {
  vpc_id                  = aws_vpc.main.id
  cidr_block              = module.layout.cidr
  availability_zone       = var.availability_zone
  map_public_ip_on_launch = true
  tags                    = { Name = var.name }
}

resource "aws_route_table" "main" {
  vpc_id = aws_vpc.main.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
  tags = { Name = var.name }
}

resource "aws_route_table_association" "main" {
  subnet_id      = aws_subnet.main.id
  route_table_id = aws_route_table.main.id
}

# --- The firewall: one security group per role, admitting exactly the
# layout's ingress list (../modules/layout): the service port from anywhere,
# SSH from admin_cidrs, and between roles only what the roles use.

resource "aws_security_group" "role" {
  for_each = module.layout.roles

  name        = "${var.name}-${each.key}"
  description = "rates ${each.key} hosts"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${var.name}-${each.key}" }
}

locals {
  # One rule per role, port and source: a CIDR (world: anywhere; admin: each
  # of admin_cidrs) or another role's security group.
  ingress = merge([
    for rule in module.layout.ingress : {
      for source in(rule.from == "world" ? ["0.0.0.0/0"] : rule.from == "admin" ? var.admin_cidrs : [rule.from]) :
      "${rule.role}-${rule.port}-${source}" => {
        role        = rule.role
        port        = rule.port
        from        = rule.from
        cidr        = contains(["world", "admin"], rule.from) ? source : null
        source_role = contains(["world", "admin"], rule.from) ? null : source
      }
    }
  ]...)
}

resource "aws_vpc_security_group_ingress_rule" "role" {
  for_each = local.ingress

  security_group_id            = aws_security_group.role[each.value.role].id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  cidr_ipv4                    = each.value.cidr
  referenced_security_group_id = each.value.source_role == null ? null : aws_security_group.role[each.value.source_role].id
  description                  = "${each.value.from} to ${each.value.role}:${each.value.port}"
}

# Outbound: anywhere (the installer, Nix's binary cache, the other hosts).
resource "aws_vpc_security_group_egress_rule" "role" {
  for_each = aws_security_group.role

  security_group_id = each.value.id
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- The machines.

resource "aws_key_pair" "operator" {
  key_name   = var.name
  public_key = var.ssh_public_key
}

resource "aws_instance" "host" {
  for_each = local.hosts

  ami                    = data.aws_ami.nixos.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.main.id
  private_ip             = each.value.address
  vpc_security_group_ids = [aws_security_group.role[each.value.role].id]
  key_name               = aws_key_pair.operator.key_name

  # Instance metadata with session tokens only (IMDSv2), which the NixOS AMI
  # uses to fetch the key at its first boot.
  metadata_options {
    http_tokens = "required"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.disk_size
    encrypted   = true
  }

  tags = { Name = "${var.name}-${each.key}" }

  # The AMI's name changes with every NixOS point release; that must not
  # replace running hosts (and their database). New hosts take the newest.
  lifecycle {
    ignore_changes = [ami]
  }

  depends_on = [aws_route_table_association.main]
}

module "install" {
  source = "../modules/install"

  flake = abspath("${path.module}/../..")
  hosts = {
    for name, host in local.hosts : name => {
      configuration  = "aws-${name}"
      address        = host.address
      public_address = aws_instance.host[name].public_ip
      instance_id    = aws_instance.host[name].id
      secret         = host.secret
    }
  }
  authorized_keys = var.ssh_public_key
  password_file   = var.password_file
}
