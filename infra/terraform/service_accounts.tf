# Two identities: the job (Dataflow workers and the flex template launcher) and the orchestrator
# (Cloud Scheduler -> Cloud Workflows -> flex template launch). Neither has project-wide access
# to BigQuery data or to Cloud Storage.
resource "google_service_account" "job" {
  account_id   = "smescore-job"
  display_name = "smescore nightly job (Dataflow workers)"
}

resource "google_service_account" "orchestrator" {
  account_id   = "smescore-orchestrator"
  display_name = "smescore nightly schedule (Scheduler, Workflows, template launch)"
}

# Project-level roles: running Dataflow work and BigQuery jobs. None of them reads or writes table
# data; data access is granted per dataset in bigquery.tf.
resource "google_project_iam_member" "job_dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = "serviceAccount:${google_service_account.job.email}"
}

resource "google_project_iam_member" "job_bigquery_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.job.email}"
}

resource "google_project_iam_member" "job_bigquery_read_sessions" {
  project = var.project_id
  role    = "roles/bigquery.readSessionUser"
  member  = "serviceAccount:${google_service_account.job.email}"
}

resource "google_project_iam_member" "orchestrator_dataflow_developer" {
  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${google_service_account.orchestrator.email}"
}

resource "google_project_iam_member" "orchestrator_workflows_invoker" {
  project = var.project_id
  role    = "roles/workflows.invoker"
  member  = "serviceAccount:${google_service_account.orchestrator.email}"
}

resource "google_project_iam_member" "orchestrator_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.orchestrator.email}"
}

# The orchestrator may launch jobs as the job's account, and as no other.
resource "google_service_account_iam_member" "orchestrator_acts_as_job" {
  service_account_id = google_service_account.job.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.orchestrator.email}"
}
