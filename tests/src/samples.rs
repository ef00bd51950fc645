//! Sample values of PostgreSQL's built-in types, edge values first, as the text their input
//! functions read: the fidelity tests write every one of them, and the differential tester
//! draws its column values from them.

use std::collections::BTreeMap;

/// Sample literals for every base, range and multirange type of PostgreSQL 15's catalog, edge
/// values first. The test reads the list of types from pg_type and fails for a type missing
/// here, so a new type cannot go untested.
pub fn samples() -> BTreeMap<&'static str, Vec<String>> {
    let all_bytes: String = (0..=255u8).map(|b| format!("{b:02x}")).collect();
    let s = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let mut m = BTreeMap::new();
    m.insert("boolean", s(&["true", "false"]));
    m.insert("bytea", vec![String::new(), format!("\\x{all_bytes}"), "\\x5c27225c".into()]);
    m.insert("\"char\"", s(&["a", " ", "'", "\\"]));
    m.insert("name", s(&["a name with spaces ☃", &"n".repeat(63)]));
    m.insert("bigint", s(&["-9223372036854775808", "9223372036854775807", "0"]));
    m.insert("smallint", s(&["-32768", "32767"]));
    m.insert("int2vector", s(&["1 2 3", ""]));
    m.insert("integer", s(&["-2147483648", "2147483647"]));
    m.insert("regproc", s(&["now", "int4in"]));
    m.insert(
        "text",
        s(&[
            "",
            "quotes ' \" and \\ backslash\nnew line\ttab\rreturn",
            "4-byte UTF-8 😀 and ünïcödé",
            "\\.",
            "\\N",
            &"long ".repeat(3000),
        ]),
    );
    m.insert("oid", s(&["0", "4294967295"]));
    m.insert("tid", s(&["(0,1)", "(4294967295,65535)"]));
    m.insert("xid", s(&["0", "4294967295"]));
    m.insert("cid", s(&["0", "4294967295"]));
    m.insert("oidvector", s(&["1 2", ""]));
    m.insert("json", s(&["{\"a\": [1, 2.50, \"x\\u00e9\\ud83d\\ude00\"],  \"b\" : null}", "[]"]));
    m.insert("xml", s(&["<a b=\"1\">x &amp; y</a>", "text only, as content"]));
    m.insert("xid8", s(&["0", "18446744073709551615"]));
    m.insert("point", s(&["(1.5,-2)", "(1e+308,-1e-308)"]));
    m.insert("lseg", s(&["[(0,0),(1,1)]"]));
    m.insert("path", s(&["((0,0),(1,1),(2,0))", "[(0,0),(1,1)]"]));
    m.insert("box", s(&["(1,1),(0,0)"]));
    m.insert("polygon", s(&["((0,0),(1,1),(1,0))"]));
    m.insert("line", s(&["{1,-1,0}"]));
    m.insert("real", s(&["0", "-0", "Infinity", "-Infinity", "NaN", "3.4028235e+38", "1e-45", "0.1"]));
    m.insert(
        "double precision",
        s(&[
            "0",
            "-0",
            "Infinity",
            "-Infinity",
            "NaN",
            "1.7976931348623157e+308",
            "5e-324",
            "0.1",
            "-2.2250738585072014e-308",
        ]),
    );
    m.insert("circle", s(&["<(1,2),3>"]));
    m.insert("money", s(&["0", "-92233720368547758.08", "92233720368547758.07", "12.34"]));
    m.insert("macaddr", s(&["08:00:2b:01:02:03"]));
    m.insert("inet", s(&["192.168.0.1/24", "::ffff:1.2.3.4", "2001:db8::1"]));
    m.insert("cidr", s(&["10.0.0.0/8", "2001:db8::/32"]));
    m.insert("macaddr8", s(&["08:00:2b:01:02:03:04:05"]));
    m.insert("aclitem", s(&["postgres=arwdDxt/postgres", "=r/postgres"]));
    m.insert("character", s(&["x", " ", "é"]));
    m.insert("character varying", s(&["", "abc", "ünïcode"]));
    m.insert("date", s(&["2024-02-29", "infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "0001-01-01"]));
    m.insert("time without time zone", s(&["00:00:00", "23:59:59.999999", "24:00:00"]));
    m.insert(
        "timestamp without time zone",
        s(&[
            "infinity",
            "-infinity",
            "2024-02-29 12:34:56.789012",
            "4713-01-01 00:00:00 BC",
            "294276-12-31 23:59:59.999999",
        ]),
    );
    m.insert(
        "timestamp with time zone",
        s(&[
            "infinity",
            "-infinity",
            "2024-02-29 12:34:56.789012+05:45",
            "4713-01-01 00:00:00+00 BC",
            "294276-12-31 23:59:59.999999+00",
        ]),
    );
    m.insert(
        "interval",
        s(&[
            "1 year 2 mons 3 days 04:05:06.789012",
            "-1 mons +2 days -00:00:00.000001",
            "0",
            "178000000 years",
            "-178000000 years",
        ]),
    );
    m.insert("time with time zone", s(&["12:34:56.789+05:45", "00:00:00-15:59"]));
    m.insert("bit", s(&["1", "0"]));
    m.insert("bit varying", s(&["", "10101010101"]));
    m.insert(
        "numeric",
        s(&[
            "NaN",
            "Infinity",
            "-Infinity",
            "0",
            "-0.000000000000000000000000000001",
            "123456789012345678901234567890.123456789",
        ]),
    );
    m.insert("refcursor", s(&["cursor name", ""]));
    m.insert("regprocedure", s(&["sum(integer)", "now()"]));
    m.insert("regoper", s(&["||/"]));
    m.insert("regoperator", s(&["+(integer,integer)"]));
    m.insert("regclass", s(&["pg_class", "pg_catalog.pg_type"]));
    m.insert("regcollation", s(&["\"C\"", "\"POSIX\""]));
    m.insert("regtype", s(&["integer", "character varying"]));
    m.insert("regrole", s(&["postgres", "pg_monitor"]));
    m.insert("regnamespace", s(&["pg_catalog", "public"]));
    m.insert("uuid", s(&["00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]));
    m.insert("pg_lsn", s(&["0/0", "FFFFFFFF/FFFFFFFF"]));
    m.insert("tsvector", s(&["'a quoted' fat:1A cat:2B", ""]));
    m.insert("tsquery", s(&["fat & (rat | cat)", "!x"]));
    m.insert("regconfig", s(&["english", "simple"]));
    m.insert("regdictionary", s(&["english_stem"]));
    m.insert("jsonb", s(&["{\"a\": \"\\u00e9\\ud83d\\ude00\", \"n\": 1.50, \"z\": [true, null]}", "\"string\"", "{}"]));
    m.insert("jsonpath", s(&["$.a[*] ? (@ > 1)", "strict $.x"]));
    m.insert("txid_snapshot", s(&["10:20:10,14,15", "3:3:"]));
    m.insert("pg_snapshot", s(&["10:20:10,14,15"]));
    m.insert("int4range", s(&["[1,10)", "empty", "(,5]"]));
    m.insert("numrange", s(&["[1.5,2.25]", "(,)"]));
    m.insert("tsrange", s(&["[2024-01-01 00:00,infinity)"]));
    m.insert("tstzrange", s(&["[2024-01-01 00:00+00,2024-01-02 00:00+05)"]));
    m.insert("daterange", s(&["[2024-01-01,2024-02-29]", "empty"]));
    m.insert("int8range", s(&["[-9223372036854775808,9223372036854775807)"]));
    m.insert("int4multirange", s(&["{[1,3),[5,7)}", "{}"]));
    m.insert("nummultirange", s(&["{[1.5,2.5]}"]));
    m.insert("tsmultirange", s(&["{[2024-01-01,2024-01-02)}"]));
    m.insert("tstzmultirange", s(&["{[2024-01-01 00:00+00,2024-01-02 00:00+00)}"]));
    m.insert("datemultirange", s(&["{[2024-01-01,2024-01-05),[2024-02-01,2024-02-02)}"]));
    m.insert("int8multirange", s(&["{[1,2)}"]));
    m
}

/// A literal that reads the same whether standard_conforming_strings is on or off.
pub fn as_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An expression of type `t` with the sample `value`. Money goes through numeric: money's own
/// input follows the session's lc_monetary, which a hostile writer sets to de_DE.
pub fn typed(value: &str, t: &str) -> String {
    if t == "money" {
        format!("{}::numeric::money", as_literal(value))
    } else {
        format!("{}::{t}", as_literal(value))
    }
}
