-- Whether the warehouse has the demo's ground-truth side table (tarq.data.demo_oracle).
SELECT count(*) > 0 FROM information_schema.tables WHERE table_name = 'demo_truth'
