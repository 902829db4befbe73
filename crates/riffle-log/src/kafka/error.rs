//! librdkafka's errors as Riffle's. The conversion lives here, not in
//! `riffle-base`, so that the base crate does not link librdkafka; the
//! orphan rule forbids an `impl From<KafkaError> for Error` here, so it is a
//! function, used as `.map_err(kafka_error)`.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::Error;

/// `e` as an [`Error`]: a full queue is [`Error::QueueFull`], a bad client
/// property [`Error::InvalidInput`], anything else [`Error::Kafka`] with
/// librdkafka's code and its text.
pub fn kafka_error(e: KafkaError) -> Error {
    let code = e.rdkafka_error_code();
    if code == Some(RDKafkaErrorCode::QueueFull) {
        return Error::QueueFull;
    }
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            Error::InvalidInput(format!("property {key}={value}: {desc}"))
        }
        other => Error::Kafka {
            code: code.map(code_number),
            message: other.to_string(),
        },
    }
}

/// An admin operation's per-item failure `code`, described by `what`
/// (`cannot create topic 't'`).
pub(crate) fn kafka_code_error(what: String, code: RDKafkaErrorCode) -> Error {
    Error::Kafka {
        code: Some(code_number(code)),
        message: format!("{what}: {code}"),
    }
}

/// librdkafka's number for `code`: the Kafka protocol's error code when
/// positive, a local error when negative.
pub fn code_number(code: RDKafkaErrorCode) -> i32 {
    code as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_librdkafkas_numbers_and_the_text_is_kept() {
        let e = kafka_error(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        let Error::Kafka { code, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*code, Some(3), "Kafka's UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(
            message,
            &KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition).to_string()
        );
        assert_eq!(e.to_string(), *message);
        assert_eq!(code_number(RDKafkaErrorCode::AllBrokersDown), -187);
    }

    #[test]
    fn a_full_queue_and_a_bad_property_get_their_own_variants() {
        assert_eq!(
            kafka_error(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
            Error::QueueFull
        );
        let e = kafka_error(KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "bad value".into(),
            "linger.ms".into(),
            "soon".into(),
        ));
        assert_eq!(
            e,
            Error::InvalidInput("property linger.ms=soon: bad value".into())
        );
    }

    #[test]
    fn admin_failures_name_the_operation_and_keep_the_code() {
        let e = kafka_code_error(
            "cannot delete group 'g'".into(),
            RDKafkaErrorCode::GroupAuthorizationFailed,
        );
        assert!(matches!(e, Error::Kafka { code: Some(30), .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("cannot delete group 'g': "),
            "{e}"
        );
    }
}
