//! The one place where site errors become gRPC statuses, with deliberate codes.
//!
//! | [`ControlError`]  | code               | why                                               |
//! |-------------------|--------------------|---------------------------------------------------|
//! | `Invalid`         | `INVALID_ARGUMENT` | the request is wrong; message lists every field   |
//! | `NotFound`        | `NOT_FOUND`        | nothing to remove                                 |
//! | `AlreadyExists`   | `ALREADY_EXISTS`   | name or local socket taken                        |
//! | `Persist`         | `INTERNAL`         | see below                                         |
//! | `Unavailable`     | `UNAVAILABLE`      | the site is shutting down; retrying later is fine |
//! | `NoConfigFile`    | `FAILED_PRECONDITION` | reload of a site started without a config file |
//!
//! `Persist` means the change *was applied* but the state file could not be
//! written, so it will not survive a restart. That is a server-side fault the
//! client can neither fix nor usefully retry (a retry would now say
//! `ALREADY_EXISTS`/`NOT_FOUND`), hence `INTERNAL`, with a message that says
//! the change is in effect. No other module builds a `Status` from an error.

use tonic::Status;

use crate::site::handle::ControlError;

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid(_) => Self::invalid_argument(message),
            ControlError::NotFound(_) => Self::not_found(message),
            ControlError::AlreadyExists(_) => Self::already_exists(message),
            ControlError::Persist(_) => Self::internal(message),
            ControlError::Unavailable => Self::unavailable(message),
            ControlError::NoConfigFile => Self::failed_precondition(message),
        }
    }
}

/// The status ending a watch whose client fell `missed` events behind.
pub(crate) fn lagged(missed: u64) -> Status {
    Status::resource_exhausted(format!(
        "client fell behind: {missed} events were dropped; watch again to get a fresh snapshot"
    ))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::config::FieldError;

    #[test]
    fn each_error_gets_its_code_and_keeps_its_message() {
        let invalid = ControlError::Invalid(vec![
            FieldError::new("appName", "is required"),
            FieldError::new("appSocket", "'x' must start with 'tcp:' or 'unix:'"),
        ]);
        let s = Status::from(invalid);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "appName: is required; appSocket: 'x' must start with 'tcp:' or 'unix:'"
        );
        let cases = [
            (ControlError::NotFound("no app".into()), Code::NotFound),
            (
                ControlError::AlreadyExists("taken".into()),
                Code::AlreadyExists,
            ),
            (ControlError::Persist("applied, but".into()), Code::Internal),
            (ControlError::Unavailable, Code::Unavailable),
            (ControlError::NoConfigFile, Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, message.as_str()));
        }
        assert_eq!(lagged(3).code(), Code::ResourceExhausted);
    }
}
