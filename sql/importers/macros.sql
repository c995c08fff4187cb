-- Connection-local helpers every importer statement uses. Temporary: nothing is stored in
-- the warehouse. tarq_code must stay identical to tarq.data.codes.stable_code.

-- Stable 63-bit code of a categorical string (MD5, first 8 bytes little-endian, >> 1).
CREATE OR REPLACE TEMP MACRO tarq_code(s) AS
    CAST(md5_number_upper(CAST(s AS VARCHAR)) >> 1 AS BIGINT);

-- Strict integer parse: '12', '-3', '12.0' pass; '12.5', '1e3', 'abc' give NULL (a plain
-- TRY_CAST would round '12.5' to 13 and read '1e3' as 1000, silently changing ids).
CREATE OR REPLACE TEMP MACRO tarq_int(v) AS
    CASE WHEN regexp_full_match(trim(CAST(v AS VARCHAR)), '[+-]?[0-9]+(\.0+)?')
         THEN TRY_CAST(trim(CAST(v AS VARCHAR)) AS BIGINT) END;

-- Unix seconds (integer or fractional) → naive UTC TIMESTAMP; NULL when not a number or
-- beyond year ~5000. make_timestamp(µs) never consults the session time zone.
CREATE OR REPLACE TEMP MACRO tarq_epoch(v) AS
    CASE WHEN abs(TRY_CAST(trim(CAST(v AS VARCHAR)) AS DOUBLE)) < 1e11
         THEN make_timestamp(CAST(round(TRY_CAST(trim(CAST(v AS VARCHAR)) AS DOUBLE) * 1e6) AS BIGINT)) END;

-- Timestamp text → naive UTC TIMESTAMP. Text with an offset ('+02:00', 'Z') is converted to
-- UTC (a plain cast to TIMESTAMP would drop the offset); bare numbers are Unix seconds.
-- 'infinity' / '-infinity' (DuckDB and Parquet can hold them) are no time: NULL.
CREATE OR REPLACE TEMP MACRO tarq_ts_any(v) AS
    CASE
        WHEN v IS NULL THEN NULL
        WHEN regexp_full_match(trim(CAST(v AS VARCHAR)), '[+-]?[0-9]+(\.[0-9]+)?') THEN tarq_epoch(v)
        WHEN regexp_matches(trim(CAST(v AS VARCHAR)), '[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*([+-][0-9]{2}(:?[0-9]{2})?|Z|UTC)$')
            THEN TRY_CAST(trim(CAST(v AS VARCHAR)) AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
        ELSE TRY_CAST(trim(CAST(v AS VARCHAR)) AS TIMESTAMP)
    END;
CREATE OR REPLACE TEMP MACRO tarq_ts(v) AS
    CASE WHEN isfinite(tarq_ts_any(v)) THEN tarq_ts_any(v) END;

-- Number text → DOUBLE, NULL when not a number. 'inf', 'nan' and overflows such as '1e400'
-- DO convert (to ±inf / NaN): tarq_nonfinite names them, so that they are quarantined as
-- non_finite instead of reaching a DOUBLE column that later arithmetic (price_bucket) chokes on.
CREATE OR REPLACE TEMP MACRO tarq_double(v) AS
    TRY_CAST(trim(CAST(v AS VARCHAR)) AS DOUBLE);

-- Boolean text: true/false/t/f/1/0/yes/no (any case) → BOOLEAN, anything else NULL.
CREATE OR REPLACE TEMP MACRO tarq_bool(v) AS
    CASE lower(trim(CAST(v AS VARCHAR)))
        WHEN 'true' THEN TRUE WHEN 't' THEN TRUE WHEN '1' THEN TRUE WHEN 'yes' THEN TRUE
        WHEN 'false' THEN FALSE WHEN 'f' THEN FALSE WHEN '0' THEN FALSE WHEN 'no' THEN FALSE
    END;

-- Reject reasons: NULL when the value is fine, so that concat_ws keeps only the problems.
CREATE OR REPLACE TEMP MACRO tarq_missing(name, v) AS
    CASE WHEN v IS NULL THEN name || ' is empty' END;
CREATE OR REPLACE TEMP MACRO tarq_bad(name, v, typed, what) AS
    CASE WHEN v IS NOT NULL AND typed IS NULL
         THEN name || ': ''' || left(CAST(v AS VARCHAR), 80) || ''' is not ' || what END;
CREATE OR REPLACE TEMP MACRO tarq_nonfinite(name, v) AS
    CASE WHEN NOT isfinite(tarq_double(v))
         THEN name || ': ''' || left(trim(CAST(v AS VARCHAR)), 80) || ''' is not a finite number' END;

-- A staged row's reject check and reason from its per-kind reasons (NULL = fine): missing
-- keys first, then values that do not parse, then one importer-specific check (optional).
CREATE OR REPLACE TEMP MACRO tarq_reject_check(null_reason, cast_reason, other_reason := NULL,
                                               other_check := NULL) AS
    CASE WHEN null_reason IS NOT NULL THEN 'null_key'
         WHEN cast_reason IS NOT NULL THEN 'type_cast'
         WHEN other_reason IS NOT NULL THEN other_check END;
CREATE OR REPLACE TEMP MACRO tarq_reject_reason(null_reason, cast_reason, other_reason := NULL) AS
    nullif(concat_ws('; ', null_reason, cast_reason, other_reason), '');
