//! Account endpoints: registration and the profile.

use aggregates::user::{
    ProfileDraft, ProfilePatch, RegisterUser, UpdateProfile, User, UserCommand, UserError,
};
use aggregates::values::{Email, FieldError, Locale, Metadata, Name, Phone, PictureUrl, TimeZone};
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sqlx::{FromRow, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::envelope::{ErrorBody, Success, SuccessBody};
use super::error::ApiError;
use super::extract::{
    ApiJson, Caller, ClientContext, RequestBody, SessionProfile, UserPath, incomplete,
};
use aggregates::services::BlindIndex;

/// Fields of a user resource that only the server sets.
const SERVER_OWNED_FIELDS: &[&str] = &[
    "user_id",
    "email",
    "email_verified",
    "status",
    "mfa_enabled",
    "created_at",
    "updated_at",
    "version",
];

/// A user's profile as the API returns it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ProfileView {
    pub user_id: Uuid,
    pub email: Option<String>,
    pub email_verified: bool,
    /// `active` or `suspended`.
    pub status: String,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub phone: Option<String>,
    pub picture_url: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The user's event sequence; send it back in `If-Match` to update safely.
    pub version: i64,
}

impl ProfileView {
    fn etag(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("\"{}\"", self.version))
            .unwrap_or(HeaderValue::from_static("\"0\""))
    }
}

/// The columns of [`ProfileView`] in `user_profiles`, read through the alias `p`.
macro_rules! profile_columns {
    () => {
        "p.user_id, p.email, p.email_verified, p.status, p.display_name, p.given_name,
         p.family_name, p.locale, p.timezone, p.phone, p.picture_url, p.metadata, p.mfa_enabled,
         p.created_at, p.updated_at, p.version"
    };
}
pub(crate) use profile_columns;

/// Reads a projected profile.
pub async fn load_profile(state: &AppState, user_id: Uuid) -> Result<ProfileView, ApiError> {
    sqlx::query_as::<_, ProfileView>(concat!(
        "SELECT ",
        profile_columns!(),
        " FROM user_profiles p WHERE p.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::UserNotFound)
}

/// Reads the profile that a write has just changed from the read model, as every later read
/// does. When that model is incomplete (a replay in progress) or its row is older than the
/// write (the wait for the projection timed out), it builds the profile from the aggregate's
/// state after the write instead, so that the response shows the write.
async fn profile_after_write(state: &AppState, user: &User) -> Result<ProfileView, ApiError> {
    let user_id = user.user_id().ok_or(ApiError::UserNotFound)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        incomplete!("'{profiles}'"),
        " AS incomplete, ",
        profile_columns!(),
        " FROM (SELECT 1) AS one LEFT JOIN user_profiles p ON p.user_id = $1"
    ))
    .bind(user_id)
    .fetch_one(&state.pool)
    .await?;
    let row_version: Option<i64> = row.try_get("version")?;
    let behind =
        row_version.is_none_or(|version| u64::try_from(version).unwrap_or(0) < user.version());
    if row.try_get::<bool, _>("incomplete")? || behind {
        return ProfileView::from_user(user);
    }
    Ok(ProfileView::from_row(&row)?)
}

impl ProfileView {
    /// Builds the profile from the aggregate's state.
    fn from_user(user: &User) -> Result<Self, ApiError> {
        let missing =
            || ApiError::Internal(anyhow::anyhow!("the user aggregate is not registered"));
        let profile = user.profile();
        Ok(Self {
            user_id: user.user_id().ok_or_else(missing)?,
            email: user.email().map(str::to_owned),
            email_verified: user.email_verified(),
            status: user.status().as_str().to_owned(),
            display_name: profile.display_name.clone(),
            given_name: profile.given_name.clone(),
            family_name: profile.family_name.clone(),
            locale: profile.locale.clone(),
            timezone: profile.timezone.clone(),
            phone: profile.phone.clone(),
            picture_url: profile.picture_url.clone(),
            metadata: Value::Object(profile.metadata.clone()),
            mfa_enabled: user.totp_enabled(),
            // PostgreSQL keeps microseconds, so the read model's times are truncated to them.
            created_at: user.created_at().ok_or_else(missing)?.trunc_subsecs(6),
            updated_at: user.updated_at().ok_or_else(missing)?.trunc_subsecs(6),
            version: i64::try_from(user.version())
                .map_err(|error| ApiError::Internal(error.into()))?,
        })
    }
}

fn profile_response(status: Success<ProfileView>) -> impl IntoResponse {
    let etag = status.data.etag();
    ([(header::ETAG, etag)], status)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    email: Option<String>,
    #[schema(value_type = String, format = Password)]
    password: Option<SecretString>,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    phone: Option<String>,
    picture_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

impl RequestBody for RegisterRequest {
    const REQUIRED: &'static [&'static str] = &["email", "password"];
    const READ_ONLY: &'static [&'static str] = &[
        "user_id",
        "email_verified",
        "status",
        "mfa_enabled",
        "created_at",
        "updated_at",
        "version",
    ];
}

/// Collects every field error instead of stopping at the first.
#[derive(Default)]
struct Validation(Vec<FieldError>);

impl Validation {
    fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|error| self.0.push(error)).ok()
    }

    fn optional<T>(
        &mut self,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<T> {
        raw.and_then(|raw| self.check(parse(raw)))
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(&self.0))
        }
    }
}

impl RegisterRequest {
    fn into_command(self, user_id: Uuid) -> Result<RegisterUser, ApiError> {
        let mut validation = Validation::default();
        let email = validation.check(Email::parse(self.email.as_deref().unwrap_or_default()));
        let profile = ProfileDraft {
            display_name: validation.optional(self.display_name.as_deref(), |raw| {
                Name::parse("display_name", raw)
            }),
            given_name: validation.optional(self.given_name.as_deref(), |raw| {
                Name::parse("given_name", raw)
            }),
            family_name: validation.optional(self.family_name.as_deref(), |raw| {
                Name::parse("family_name", raw)
            }),
            locale: validation.optional(self.locale.as_deref(), Locale::parse),
            timezone: validation.optional(self.timezone.as_deref(), TimeZone::parse),
            phone: validation.optional(self.phone.as_deref(), Phone::parse),
            picture_url: validation.optional(self.picture_url.as_deref(), PictureUrl::parse),
            metadata: self
                .metadata
                .and_then(|raw| validation.check(Metadata::parse(raw))),
        };
        validation.finish()?;

        let (Some(email), Some(password)) = (email, self.password) else {
            return Err(ApiError::Missing {
                fields: vec!["email".to_owned(), "password".to_owned()],
            });
        };
        Ok(RegisterUser {
            user_id,
            email,
            password,
            profile,
        })
    }
}

pub(crate) fn user_rejection(error: UserError) -> ApiError {
    match error {
        UserError::AlreadyRegistered => ApiError::EmailTaken,
        UserError::NotFound => ApiError::UserNotFound,
        UserError::Invalid(errors) => ApiError::invalid_fields(&errors),
        UserError::VersionMismatch { current, .. } => ApiError::Conflict(format!(
            "If-Match does not match the current version {current}"
        )),
        UserError::Service(message) => ApiError::Internal(anyhow::anyhow!(message)),
        UserError::InvalidCredentials => ApiError::InvalidCredentials,
        UserError::TotpAlreadyEnabled => {
            ApiError::invalid("TOTP is already enabled; disable it before enrolling again")
        }
        UserError::TotpNotEnabled => ApiError::invalid("TOTP is not enabled for this account"),
        UserError::NoTotpSetup => ApiError::invalid(
            "No TOTP setup is pending or it expired; start a new one with /mfa/totp/setup",
        ),
        UserError::ChallengeInvalid => ApiError::InvalidToken,
        UserError::Suspended => ApiError::Suspended,
        UserError::InvalidCode => ApiError::InvalidCredentials,
        UserError::InvalidToken => ApiError::InvalidToken,
        UserError::NoPendingVerification => ApiError::invalid("No email verification is pending"),
        UserError::EmailTaken => ApiError::EmailTaken,
    }
}

/// A new account, with the verification request whose code was mailed to its address.
#[derive(Serialize, ToSchema)]
pub struct RegisteredView {
    #[serde(flatten)]
    pub profile: ProfileView,
    /// Send it with the mailed code to `POST /users/{userId}/email/verify`.
    pub change_request_id: Uuid,
}

/// Registers an account and mails a six-digit code to its address. No credential is needed.
#[utoipa::path(
    post, path = "/users", tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; the code is mailed", body = SuccessBody<RegisteredView>),
        (status = 400, description = "VAL_001 invalid field or weak password, VAL_002 missing field", body = ErrorBody),
        (status = 409, description = "USER_003 the email address is taken", body = ErrorBody),
    )
)]
pub async fn register_user(
    State(state): State<AppState>,
    client: ClientContext,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = Uuid::now_v7();
    let command = request.into_command(user_id)?;

    // Fast path for an address that is already taken; the claim trigger decides races.
    let index = state.indexer.email_index(&command.email);
    let taken: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM email_claims WHERE email_index = $1)")
            .bind(&index)
            .fetch_one(&state.pool)
            .await?;
    if taken {
        return Err(ApiError::EmailTaken);
    }

    let metadata = client.metadata(format!("user:{user_id}"), None);
    let secrets = super::email::new_secrets(&state, user_id, Uuid::now_v7());
    let (_, _, user) = state
        .users
        .execute_with_state(
            &user_id.to_string(),
            || UserCommand::RegisterWithVerification(command.clone(), secrets.clone()),
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    let profile = profile_after_write(&state, &user).await?;
    let etag = profile.etag();
    let location = HeaderValue::from_str(&format!("/api/v1/users/{user_id}"))
        .map_err(|error| ApiError::Internal(error.into()))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location);
    headers.insert(header::ETAG, etag);
    let registered = RegisteredView {
        profile,
        change_request_id: secrets.change_request_id,
    };
    Ok((headers, Success::created("User registered", registered)))
}

/// Returns a profile. Bearer token of that user (`{userId}` may be `me`), or an API key with
/// `users:read`.
#[utoipa::path(
    get, path = "/users/{userId}", tag = "users",
    params(("userId" = String, Path, description = "The user's id, or `me`")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The profile, with its version in ETag", body = SuccessBody<ProfileView>),
        (status = 401, description = "AUTH_001 missing or invalid token", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user's id, USER_002 suspended", body = ErrorBody),
        (status = 404, description = "USER_001 no such user", body = ErrorBody),
    )
)]
pub async fn get_profile(
    State(state): State<AppState>,
    caller: Caller,
    UserPath(segment): UserPath,
    session_profile: Option<Extension<SessionProfile>>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:read")?;
    let profile = match session_profile {
        Some(Extension(SessionProfile(profile))) if profile.user_id == user_id => {
            Arc::unwrap_or_clone(profile)
        }
        _ => load_profile(&state, user_id).await?,
    };
    Ok(profile_response(Success::ok("Profile retrieved", profile)))
}

/// Deserialises a present field as `Some`, so that `null` becomes `Some(None)`.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Any subset of the writable profile fields; `null` clears a field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    family_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    locale: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    picture_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Option<Map<String, Value>>>,
}

impl RequestBody for UpdateProfileRequest {
    const READ_ONLY: &'static [&'static str] = SERVER_OWNED_FIELDS;
}

impl UpdateProfileRequest {
    fn into_patch(self) -> Result<ProfilePatch, ApiError> {
        fn field<T>(
            validation: &mut Validation,
            raw: Option<Option<String>>,
            parse: impl FnOnce(&str) -> Result<T, FieldError>,
        ) -> Option<Option<T>> {
            match raw {
                None => None,
                Some(None) => Some(None),
                Some(Some(raw)) => validation.check(parse(&raw)).map(Some),
            }
        }

        let mut validation = Validation::default();
        let patch = ProfilePatch {
            display_name: field(&mut validation, self.display_name, |raw| {
                Name::parse("display_name", raw)
            }),
            given_name: field(&mut validation, self.given_name, |raw| {
                Name::parse("given_name", raw)
            }),
            family_name: field(&mut validation, self.family_name, |raw| {
                Name::parse("family_name", raw)
            }),
            locale: field(&mut validation, self.locale, Locale::parse),
            timezone: field(&mut validation, self.timezone, TimeZone::parse),
            phone: field(&mut validation, self.phone, Phone::parse),
            picture_url: field(&mut validation, self.picture_url, PictureUrl::parse),
            metadata: match self.metadata {
                None => None,
                Some(None) => Some(None),
                Some(Some(map)) => validation
                    .check(Metadata::parse(Value::Object(map)))
                    .map(Some),
            },
        };
        validation.finish()?;
        Ok(patch)
    }
}

/// Reads `If-Match`: `None` when absent or `*`, else the version it names.
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid =
        || ApiError::invalid("If-Match must be an ETag returned by this API, such as \"3\"");
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let version = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    version.parse().map(Some).map_err(|_| invalid())
}

/// Changes the sent profile fields and leaves the others as they were. Bearer token of that
/// user, or an API key with `users:write`. With `If-Match`, the update applies only at that
/// version.
#[utoipa::path(
    patch, path = "/users/{userId}", tag = "users",
    params(
        ("userId" = String, Path, description = "The user's id, or `me`"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version being changed"),
    ),
    request_body = UpdateProfileRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The updated profile", body = SuccessBody<ProfileView>),
        (status = 400, description = "VAL_001 invalid, unknown or server-owned field", body = ErrorBody),
        (status = 401, description = "AUTH_001 missing or invalid token", body = ErrorBody),
        (status = 403, description = "AUTH_002 another user's id", body = ErrorBody),
        (status = 409, description = "CONFLICT_001 stale If-Match", body = ErrorBody),
    )
)]
pub async fn update_profile(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateProfileRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = caller.resolve_user(&segment, "users:write")?;
    let expected_version = expected_version(&headers)?;
    let patch = request.into_patch()?;

    let metadata = client.metadata(caller.actor(), None);
    let (_, _, user) = state
        .users
        .execute_with_state(
            &user_id.to_string(),
            || {
                UserCommand::UpdateProfile(UpdateProfile {
                    patch: patch.clone(),
                    expected_version,
                })
            },
            &metadata,
        )
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;

    let profile = profile_after_write(&state, &user).await?;
    Ok(profile_response(Success::ok("Profile updated", profile)))
}

/// Longest suspension reason accepted, in characters.
const SUSPENSION_REASON_MAX_CHARS: usize = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why the account is suspended; stored sealed.
    reason: Option<String>,
}

impl RequestBody for SuspendRequest {}

async fn set_suspension(
    state: &AppState,
    caller: &Caller,
    client: &ClientContext,
    segment: &str,
    command: impl Fn() -> UserCommand,
) -> Result<ProfileView, ApiError> {
    let user_id = caller.resolve_user(segment, "users:admin")?;
    let metadata = client.metadata(caller.actor(), None);
    let (_, _, user) = state
        .users
        .execute_with_state(&user_id.to_string(), command, &metadata)
        .await
        .map_err(|error| ApiError::from_command(error, user_rejection))?;
    profile_after_write(state, &user).await
}

/// Suspends an account: every session ends, and every credential of the user answers
/// USER_002 until it is unsuspended. API key with `users:admin`.
#[utoipa::path(
    post, path = "/users/{userId}/suspend", tag = "users",
    params(("userId" = Uuid, Path, description = "The user to suspend")),
    request_body = SuspendRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The suspended profile", body = SuccessBody<ProfileView>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 a session, or a key without users:admin", body = ErrorBody),
        (status = 404, description = "USER_001 no such user", body = ErrorBody),
    )
)]
pub async fn suspend_user(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
    ApiJson(request): ApiJson<SuspendRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_scope("users:admin")?;
    let reason = request.reason.map(|reason| reason.trim().to_owned());
    let acceptable = |reason: &String| {
        reason.chars().count() <= SUSPENSION_REASON_MAX_CHARS
            && !reason
                .chars()
                .any(|char| char.is_control() && !matches!(char, '\n' | '\r' | '\t'))
    };
    if reason.as_ref().is_some_and(|reason| !acceptable(reason)) {
        return Err(ApiError::invalid_fields(&[FieldError::new(
            "reason",
            format!(
                "must be at most {SUSPENSION_REASON_MAX_CHARS} characters, without control \
                 characters other than line breaks and tabs"
            ),
        )]));
    }

    let profile = set_suspension(&state, &caller, &client, &segment, || {
        UserCommand::Suspend {
            reason: reason.clone(),
        }
    })
    .await?;
    tracing::info!(user_id = %profile.user_id, actor = %caller.actor(), "user suspended");
    Ok(profile_response(Success::ok("User suspended", profile)))
}

/// Lifts a suspension; sessions it ended stay ended. API key with `users:admin`.
#[utoipa::path(
    post, path = "/users/{userId}/unsuspend", tag = "users",
    params(("userId" = Uuid, Path, description = "The user to unsuspend")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The active profile", body = SuccessBody<ProfileView>),
        (status = 401, description = "AUTH_001 missing or invalid credential", body = ErrorBody),
        (status = 403, description = "AUTH_002 a session, or a key without users:admin", body = ErrorBody),
        (status = 404, description = "USER_001 no such user", body = ErrorBody),
    )
)]
pub async fn unsuspend_user(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientContext,
    UserPath(segment): UserPath,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_scope("users:admin")?;
    let profile = set_suspension(&state, &caller, &client, &segment, || {
        UserCommand::Unsuspend
    })
    .await?;
    tracing::info!(user_id = %profile.user_id, actor = %caller.actor(), "user unsuspended");
    Ok(profile_response(Success::ok("User unsuspended", profile)))
}
