output "job_service_account" {
  value = google_service_account.job.email
}

output "temp_location" {
  value = "gs://${google_storage_bucket.temp.name}/temp"
}

output "registry" {
  value = local.registry
}

output "template_spec" {
  value = local.template_spec
}

output "image_repository" {
  value = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.smescore.repository_id}"
}
