SELECT count(*) FROM import_stage;
