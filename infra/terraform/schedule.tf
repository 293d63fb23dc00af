# Nightly: Cloud Scheduler starts the workflow (infra/workflows/nightly.yaml), which launches the
# flex template for yesterday and waits for the Dataflow job.
locals {
  template_spec = "gs://${google_storage_bucket.models.name}/templates/smescore-score.json"
  registry      = "gs://${google_storage_bucket.models.name}/registry"
}

resource "google_workflows_workflow" "nightly" {
  name            = "smescore-nightly"
  region          = var.region
  description     = "smescore nightly rescoring: launch the flex template, wait for the job"
  service_account = google_service_account.orchestrator.id
  source_contents = file("${path.module}/../workflows/nightly.yaml")
  user_env_vars = {
    REGION              = var.region
    TIME_ZONE           = var.time_zone
    TEMPLATE_SPEC       = local.template_spec
    FEEDS_DATASET       = var.feeds_dataset
    RISK_DATASET        = google_bigquery_dataset.risk.dataset_id
    BQ_LOCATION         = var.bq_location
    REGISTRY            = local.registry
    N_SHARDS            = tostring(var.n_shards)
    MAX_WORKERS         = tostring(var.max_workers)
    JOB_SERVICE_ACCOUNT = google_service_account.job.email
    TEMP_LOCATION       = "gs://${google_storage_bucket.temp.name}/temp"
    STAGING_LOCATION    = "gs://${google_storage_bucket.temp.name}/staging"
    WORKER_IMAGE        = var.worker_image
  }
}

resource "google_cloud_scheduler_job" "nightly" {
  name      = "smescore-nightly"
  region    = var.region
  schedule  = var.schedule
  time_zone = var.time_zone
  # A failed night is retried by hand after a look at the run: no automatic retries.
  retry_config {
    retry_count = 0
  }
  http_target {
    http_method = "POST"
    uri         = "https://workflowexecutions.googleapis.com/v1/${google_workflows_workflow.nightly.id}/executions"
    body        = base64encode(jsonencode({ argument = jsonencode({}) }))
    headers     = { "Content-Type" = "application/json" }
    oauth_token {
      service_account_email = google_service_account.orchestrator.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
}
