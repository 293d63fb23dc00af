# smescore on Google Cloud: service accounts and least-privilege IAM, the risk datasets, buckets,
# the worker image repository and the nightly schedule. The feed dataset belongs to the data
# platform and already exists: this only grants the job read access to it.
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
