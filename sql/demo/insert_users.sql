-- Append the demo users with their categorical profile codes (registered as demo_frame).
INSERT INTO users BY NAME
SELECT user_id, gender, age_bucket, segment, $load_id AS load_id
FROM demo_frame
