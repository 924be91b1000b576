//! Instants as Loop and source-loop write them. This crate owns the one output form,
//! `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, always three fractional digits), and the two
//! input forms: RFC 3339 with any offset and precision, and — only where a person
//! types the value, such as `start_date` — a bare `YYYY-MM-DD` date meaning midnight
//! UTC. Parsing is split by name ([`parse_instant`] accepts a bare date,
//! [`parse_rfc3339`] does not) so each caller says which inputs it takes.
//!
//! Instants are `DateTime<Utc>` or, where they are stored or compared as numbers,
//! signed unix milliseconds. Sub-millisecond digits are dropped (toward the past),
//! never rounded, so a formatted instant never lies after the one it came from.
//!
//! It also owns "now" ([`now`], [`Clock`]): the wall clock plus an offset only tests set
//! (module `clock`).

mod clock;

pub use clock::{now, process_offset_ms, Clock, TEST_CLOCK_OFFSET_ENV};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// An RFC 3339 date-time (any offset, any fractional precision) or a bare
/// `YYYY-MM-DD` date (midnight UTC), as UTC. Surrounding whitespace is ignored.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    parse_rfc3339(s).or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

/// An RFC 3339 date-time (any offset, any fractional precision) as UTC; a bare date is
/// rejected. Surrounding whitespace is ignored.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// [`parse_rfc3339`] as unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    parse_rfc3339(s).map(|t| t.timestamp_millis())
}

/// `2024-03-05T10:11:12.345Z`: UTC, milliseconds, `Z`. Years outside 0..=9999 get an
/// explicit sign (`+10000-…`), as ISO 8601 requires.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`format_instant`] of unix milliseconds. Milliseconds outside chrono's range
/// (about ±262,000 years) format as the epoch, `1970-01-01T00:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    format_instant(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn formats_utc_with_three_fractional_digits_and_z() {
        assert_eq!(
            format_instant(utc("2024-03-05T10:11:12Z")),
            "2024-03-05T10:11:12.000Z"
        );
        assert_eq!(
            format_instant(utc("2024-03-05T10:11:12.345Z")),
            "2024-03-05T10:11:12.345Z"
        );
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_709_633_472_345), "2024-03-05T10:11:12.345Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formatting_truncates_sub_millisecond_digits() {
        assert_eq!(
            format_instant(utc("2024-03-05T10:11:12.999999999Z")),
            "2024-03-05T10:11:12.999Z"
        );
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let want = utc("2024-01-05T01:43:34.500Z");
        assert_eq!(parse_instant("2024-01-05T03:43:34.500+02:00"), Some(want));
        assert_eq!(parse_instant("2024-01-04T20:43:34.500-05:00"), Some(want));
        assert_eq!(parse_instant("2024-01-05T01:43:34.500+00:00"), Some(want));
        assert_eq!(parse_rfc3339("2024-01-05T07:13:34.500+05:30"), Some(want));
        assert_eq!(
            parse_rfc3339_ms("2024-01-05T03:43:34.500+02:00"),
            Some(1_704_419_014_500)
        );
        // An offset across midnight moves the date.
        assert_eq!(
            format_instant(parse_instant("2024-01-01T00:30:00+01:00").unwrap()),
            "2023-12-31T23:30:00.000Z"
        );
    }

    #[test]
    fn any_fractional_precision_is_accepted() {
        assert_eq!(
            parse_rfc3339_ms("2024-01-05T01:43:34Z"),
            Some(1_704_419_014_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-05T01:43:34.5Z"),
            Some(1_704_419_014_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-05T01:43:34.123456Z"),
            Some(1_704_419_014_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-01-05T01:43:34.123999999Z"),
            Some(1_704_419_014_123)
        );
    }

    #[test]
    fn leap_day_round_trips() {
        let t = parse_instant("2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(format_instant(t), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_ms(t.timestamp_millis()), "2024-02-29T23:59:59.999Z");
        assert_eq!(
            parse_instant("2024-02-29"),
            Some(utc("2024-02-29T00:00:00Z"))
        );
        // 2023 and 1900 have no 29 February; 2000 does.
        assert_eq!(parse_instant("2023-02-29"), None);
        assert_eq!(parse_instant("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_instant("1900-02-29"), None);
        assert_eq!(
            parse_instant("2000-02-29"),
            Some(utc("2000-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn a_bare_date_is_midnight_utc_for_parse_instant_only() {
        assert_eq!(
            parse_instant("2024-01-31"),
            Some(utc("2024-01-31T00:00:00Z"))
        );
        assert_eq!(
            parse_instant("  2024-01-31\n"),
            Some(utc("2024-01-31T00:00:00Z"))
        );
        // Single-digit month and day are read too (chrono's `%m`/`%d`); the config
        // has always accepted them.
        assert_eq!(parse_instant("2024-1-5"), Some(utc("2024-01-05T00:00:00Z")));
        assert_eq!(parse_rfc3339("2024-01-31"), None);
        assert_eq!(parse_rfc3339_ms("2024-01-31"), None);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let want = Some(utc("2024-01-05T01:43:34Z"));
        assert_eq!(parse_instant(" 2024-01-05T01:43:34Z "), want);
        assert_eq!(parse_rfc3339("\t2024-01-05T01:43:34Z\n"), want);
    }

    #[test]
    fn garbage_is_rejected() {
        for s in [
            "",
            "   ",
            "yesterday",
            "2024-13-01",
            "2024-01-32",
            "2024-1-5T01:43:34Z",
            "2024-01-05T25:00:00Z",
            "2024-01-05T01:43:34",      // no offset
            "2024-01-05T01:43:34+2",    // malformed offset
            "2024-01-05 01:43",         // no seconds, no offset
            "1704419014500",            // a number is not an instant
            "2024-01-05T01:43:34.Z",    // empty fraction
            "2024-01-05T01:43:34Zjunk", // trailing text
        ] {
            assert_eq!(parse_instant(s), None, "{s:?}");
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
            assert_eq!(parse_rfc3339_ms(s), None, "{s:?}");
        }
    }

    #[test]
    fn out_of_range_years_get_a_sign_and_out_of_range_ms_the_epoch() {
        assert_eq!(
            format_instant(utc("9999-12-31T23:59:59.999Z")),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(format_ms(253_402_300_800_000), "+10000-01-01T00:00:00.000Z");
        assert_eq!(format_ms(-62_167_219_200_001), "-0001-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MAX), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(i64::MIN), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn formatted_instants_parse_back_to_the_same_millisecond() {
        for ms in [
            0,
            1,
            999,
            -1,
            1_709_251_199_999, // 2024-02-29T23:59:59.999Z
            1_704_419_014_500,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
        ] {
            assert_eq!(parse_rfc3339_ms(&format_ms(ms)), Some(ms), "{ms}");
            assert_eq!(
                parse_instant(&format_ms(ms)).map(|t| t.timestamp_millis()),
                Some(ms),
                "{ms}"
            );
        }
    }

    /// The fake Loop API used to format with strftime; the two forms must agree
    /// everywhere, including signed years.
    #[test]
    fn format_ms_equals_the_strftime_form() {
        for ms in [
            0,
            -1,
            1_709_251_199_999,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
            8_210_266_876_799_999,
            -8_334_601_228_800_000,
        ] {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(
                format_ms(ms),
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                "{ms}"
            );
        }
    }
}
