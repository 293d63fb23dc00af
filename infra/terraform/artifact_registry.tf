# The worker image repository: workers and the template launcher pull, nobody here pushes (CI does).
resource "google_artifact_registry_repository" "smescore" {
  repository_id = "smescore"
  location      = var.region
  format        = "DOCKER"
  description   = "smescore Dataflow worker and flex template image (infra/Dockerfile)"
}

resource "google_artifact_registry_repository_iam_member" "job_pulls_image" {
  repository = google_artifact_registry_repository.smescore.name
  location   = google_artifact_registry_repository.smescore.location
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.job.email}"
}
