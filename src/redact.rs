//! Masking secrets before anything is logged, printed or returned. Masking is done by
//! parsing, never by searching for `:` and `@`: a password may hold either. What is not
//! known to be harmless is masked.

use std::collections::BTreeMap;

use rdkafka::error::KafkaError;
use url::Url;

pub const MASK: &str = "****";

/// URL query parameters shown as they are; every other value is masked.
const HARMLESS_QUERY: &[&str] = &[
    "sslmode",
    "application_name",
    "connect_timeout",
    "statement_timeout",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "target_session_attrs",
];

/// librdkafka properties shown as they are: addresses, mechanisms, timings, sizes and
/// switches. Everything else (passwords, JAAS and OAuth configuration, keys, and
/// properties this list does not know yet) is masked.
const HARMLESS_KAFKA: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "group.id",
    "group.instance.id",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.kerberos.service.name",
    "sasl.kerberos.principal",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.token.endpoint.url",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
    "acks",
    "linger.ms",
    "batch.size",
    "batch.num.messages",
    "compression.type",
    "compression.codec",
    "message.timeout.ms",
    "message.max.bytes",
    "request.timeout.ms",
    "socket.timeout.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "enable.idempotence",
    "debug",
    "statistics.interval.ms",
    "topic.metadata.refresh.interval.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "client.rack",
    "broker.address.family",
];

/// `url` with the password and every query value that is not known to be harmless
/// masked. Text that does not parse as a URL is masked whole.
pub fn url(text: &str) -> String {
    let Ok(mut parsed) = Url::parse(text) else {
        return MASK.to_owned();
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(MASK));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let shown = if HARMLESS_QUERY.contains(&k.as_ref()) {
                    v.into_owned()
                } else {
                    MASK.to_owned()
                };
                (k.into_owned(), shown)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The mask itself was percent-encoded on the way in; show it as written.
    parsed.to_string().replace("%2A%2A%2A%2A", MASK)
}

/// Kafka properties with every value not on the allow-list masked.
pub fn kafka_properties(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(k, v)| {
            let shown = if HARMLESS_KAFKA.contains(&k.as_str()) {
                v.clone()
            } else {
                MASK.to_owned()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// `text` with every double-quoted part masked (serde's errors quote the value they
/// could not read).
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push_str(MASK);
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Whether a Kafka property's value may be shown.
pub fn harmless_kafka_property(key: &str) -> bool {
    HARMLESS_KAFKA.contains(&key)
}

/// `text` with every occurrence of each of `secrets` masked.
pub fn mask_all<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// A Kafka client error without the value of the property it is about: librdkafka
/// puts the rejected value into the error, and it may be a password.
pub fn kafka_error(e: KafkaError) -> KafkaError {
    match e {
        KafkaError::ClientConfig(code, description, key, value) => {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, MASK)
            };
            KafkaError::ClientConfig(code, description, key, MASK.to_owned())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_whole_even_with_at_signs() {
        assert_eq!(
            url("postgres://u:p@ss_Secret@db:5432/x"),
            "postgres://u:****@db:5432/x"
        );
        assert_eq!(url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(url("not a url p@ss"), MASK);
    }

    #[test]
    fn url_query_values_are_masked_unless_harmless() {
        let shown = url("postgres://db/x?sslmode=require&password=s3cret&sslpassword=k");
        assert_eq!(
            shown,
            "postgres://db/x?sslmode=require&password=****&sslpassword=****"
        );
    }

    #[test]
    fn kafka_properties_are_masked_unless_known_harmless() {
        let props: BTreeMap<String, String> = [
            ("sasl.password", "s"),
            ("sasl.jaas.config", "j"),
            ("sasl.oauthbearer.config", "o"),
            ("ssl.key.pem", "k"),
            ("security.protocol", "SASL_SSL"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shown = kafka_properties(&props);
        assert_eq!(shown["security.protocol"], "SASL_SSL");
        for k in [
            "sasl.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
        ] {
            assert_eq!(shown[k], MASK, "{k}");
        }
    }

    #[test]
    fn quoted_values_are_masked() {
        assert_eq!(
            quoted("invalid type: string \"s3cret\", expected a sequence"),
            "invalid type: string \"****\", expected a sequence"
        );
    }

    #[test]
    fn client_configuration_errors_lose_the_value() {
        let e = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"x\"".into(),
            "x".into(),
            "hunter2".into(),
        );
        let text = kafka_error(e).to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains('x'), "{text}");
    }
}
