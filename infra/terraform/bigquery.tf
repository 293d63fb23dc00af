# Data access, dataset by dataset: the job reads the feeds and writes the risk tables, nothing else.
# Its temporary tables (feed query results, load staging) live in the risk dataset too.
resource "google_bigquery_dataset" "risk" {
  dataset_id  = var.risk_dataset
  location    = var.bq_location
  description = "smescore risk tables (scores, attributions, portfolio_summary, drift, runs, rejected_records, ...): DDL and views in sql/bigquery/."
  labels      = { app = "smescore" }
}

resource "google_bigquery_dataset_iam_member" "job_reads_feeds" {
  dataset_id = var.feeds_dataset
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.job.email}"
}

resource "google_bigquery_dataset_iam_member" "job_writes_risk" {
  dataset_id = google_bigquery_dataset.risk.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.job.email}"
}
