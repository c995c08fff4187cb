-- Forget the previous file's staging tables (temporary, per connection).
DROP TABLE IF EXISTS import_reject_errors;
DROP TABLE IF EXISTS import_reject_scans;
DROP TABLE IF EXISTS import_stage;
DROP TABLE IF EXISTS import_typed;
