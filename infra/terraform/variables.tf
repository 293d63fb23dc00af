variable "project_id" {
  description = "Project that runs the job and holds the risk dataset."
  type        = string
}

variable "region" {
  description = "Region of the Dataflow job, the buckets, the image repository and the schedule."
  type        = string
  default     = "asia-east1"
}

variable "bq_location" {
  description = "BigQuery location of the feed and risk datasets."
  type        = string
  default     = "asia-east1"
}

variable "feeds_dataset" {
  description = "Existing dataset of the feed tables (owned by the data platform); the job only reads it."
  type        = string
  default     = "sme_feeds"
}

variable "risk_dataset" {
  description = "Dataset of the risk tables (created here; tables from sql/bigquery/)."
  type        = string
  default     = "sme_risk"
}

variable "worker_image" {
  description = "Worker and flex template image, REGION-docker.pkg.dev/PROJECT/smescore/worker:TAG (infra/Dockerfile)."
  type        = string
}

variable "time_zone" {
  description = "The bank's time zone: the schedule's clock and the as-of date (yesterday there)."
  type        = string
  default     = "Asia/Shanghai"
}

variable "schedule" {
  description = "Cron schedule of the nightly run, in time_zone (after the feeds land)."
  type        = string
  default     = "30 2 * * *"
}

variable "max_workers" {
  description = "Most GPU workers (g2-standard-4, one L4 each) the nightly job may scale to."
  type        = number
  default     = 8
}

variable "n_shards" {
  description = "Firm shards of the nightly job (about 4 per worker)."
  type        = number
  default     = 32
}
