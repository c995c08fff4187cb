-- Taobao user_profile → user rows. Every profile field is an integer code and becomes a user
-- side feature under its own name; empty fields (common for pvalue_level) stay NULL (OOV).
CREATE OR REPLACE TEMP TABLE import_typed AS
WITH typed AS (
    SELECT
        source_file, source_line, raw,
        tarq_int(raw.userid) AS user_id,
        tarq_int(raw.cms_segid) AS cms_segid,
        tarq_int(raw.cms_group_id) AS cms_group_id,
        tarq_int(raw.final_gender_code) AS final_gender_code,
        tarq_int(raw.age_level) AS age_level,
        tarq_int(raw.pvalue_level) AS pvalue_level,
        tarq_int(raw.shopping_level) AS shopping_level,
        tarq_int(raw.occupation) AS occupation,
        tarq_int(raw.new_user_class_level) AS new_user_class_level
    FROM import_stage
), checked AS (
    SELECT
        *,
        tarq_missing('userid', raw.userid) AS null_reason,
        nullif(concat_ws('; ',
            tarq_bad('userid', raw.userid, user_id, 'an integer id'),
            tarq_bad('cms_segid', raw.cms_segid, cms_segid, 'an integer code'),
            tarq_bad('cms_group_id', raw.cms_group_id, cms_group_id, 'an integer code'),
            tarq_bad('final_gender_code', raw.final_gender_code, final_gender_code, 'an integer code'),
            tarq_bad('age_level', raw.age_level, age_level, 'an integer code'),
            tarq_bad('pvalue_level', raw.pvalue_level, pvalue_level, 'an integer code'),
            tarq_bad('shopping_level', raw.shopping_level, shopping_level, 'an integer code'),
            tarq_bad('occupation', raw.occupation, occupation, 'an integer code'),
            tarq_bad('new_user_class_level', raw.new_user_class_level, new_user_class_level,
                     'an integer code')), '') AS cast_reason
    FROM typed
)
SELECT
    source_file, source_line, raw,
    user_id, cms_segid, cms_group_id, final_gender_code, age_level, pvalue_level,
    shopping_level, occupation, new_user_class_level,
    tarq_reject_check(null_reason, cast_reason) AS reject_check,
    tarq_reject_reason(null_reason, cast_reason) AS reject_reason
FROM checked;
