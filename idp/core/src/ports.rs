//! Ports: what the core needs from durable storage, split by role so each part
//! depends only on what it uses. `adapters/storage` implements them on sea-orm
//! (SQLite and PostgreSQL).

use crate::domain::{
    AuditEvent, ClientId, ClientState, Consent, CustomerId, Email, KnownDevice, Membership, OrgId,
    OrgStatus, Organization, PasswordCredential, RefreshTokenRecord, Role, StoredCredential,
    StoredSigningKey, TokenFamily, TokenHash, User, UserId,
};
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

/// The organizations a user belongs to, with their roles there.
pub type UserOrganizations = Vec<(Organization, Vec<Role>)>;

pub use crate::error::RepoError;

/// Accounts.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts `user`. A duplicate email (case-insensitive) or customer id
    /// gives [`RepoError::Conflict`] and writes nothing.
    async fn create(&self, user: &User) -> Result<(), RepoError>;
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepoError>;
    /// The user with the organizations they belong to and their roles there,
    /// in the order they joined them (the `organizations` claim), in one read.
    async fn find_with_organizations(
        &self,
        id: UserId,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError>;
    /// Case-insensitive on the address.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError>;
    async fn find_by_customer_id(&self, id: &CustomerId) -> Result<Option<User>, RepoError>;
    /// Users ordered by creation time.
    async fn list(&self, limit: u64, offset: u64) -> Result<Vec<User>, RepoError>;
    /// Remembers the login method passed last (shown first next time).
    async fn set_last_method(&self, user: UserId, method: &str) -> Result<(), RepoError>;
    /// Sets whether the account must use a second factor.
    async fn set_mfa_required(&self, user: UserId, required: bool) -> Result<(), RepoError>;
    /// Sets (or clears) the mobile number and whether it is verified.
    async fn set_phone(
        &self,
        user: UserId,
        phone: Option<&str>,
        verified: bool,
    ) -> Result<(), RepoError>;
    /// Changes the primary email. Another account holding it (case-insensitive)
    /// gives [`RepoError::Conflict`] and changes nothing.
    async fn set_email(&self, user: UserId, email: &Email, verified: bool)
    -> Result<(), RepoError>;
    /// Sets or clears the backup email.
    async fn set_backup_email(&self, user: UserId, email: Option<&Email>) -> Result<(), RepoError>;
    async fn set_name(&self, user: UserId, name: Option<&str>) -> Result<(), RepoError>;
}

/// Authentication credentials of users (password for now; TOTP, WebAuthn, ...
/// come with the login-flow work).
#[async_trait]
pub trait CredentialRepo: Send + Sync {
    async fn find_password(&self, user: UserId) -> Result<Option<PasswordCredential>, RepoError>;
    /// Creates or replaces the user's password hash.
    async fn set_password(&self, cred: &PasswordCredential) -> Result<(), RepoError>;
    /// A user's credentials of one kind, oldest first.
    async fn list_credentials(
        &self,
        user: UserId,
        kind: &str,
    ) -> Result<Vec<StoredCredential>, RepoError>;
    async fn find_credential(&self, id: Uuid) -> Result<Option<StoredCredential>, RepoError>;
    async fn create_credential(&self, cred: &StoredCredential) -> Result<(), RepoError>;
    /// Replaces the secret (and sets `last_used_at`) only if it still is
    /// `expected` (compare-and-swap): of two concurrent uses of a one-time
    /// value, exactly one succeeds. Returns whether it was replaced.
    async fn update_credential_secret(
        &self,
        id: Uuid,
        expected: &str,
        new_secret: &str,
        used_at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
    async fn rename_credential(&self, id: Uuid, label: &str) -> Result<(), RepoError>;
    /// Returns whether a credential was deleted.
    async fn delete_credential(&self, id: Uuid) -> Result<bool, RepoError>;
    /// Deletes every credential of a kind (e.g. old recovery codes); returns how many.
    async fn delete_credentials_of_kind(&self, user: UserId, kind: &str) -> Result<u64, RepoError>;
}

/// Browsers users signed in from (the new-device check).
#[async_trait]
pub trait DeviceRepo: Send + Sync {
    async fn find_device(&self, token_hash: &TokenHash) -> Result<Option<KnownDevice>, RepoError>;
    async fn create_device(&self, device: &KnownDevice) -> Result<(), RepoError>;
    async fn touch_device(&self, id: Uuid, at: OffsetDateTime) -> Result<(), RepoError>;
    /// Returns whether this call revoked it.
    async fn revoke_device(&self, id: Uuid, at: OffsetDateTime) -> Result<bool, RepoError>;
    /// A user's devices, most recently seen first.
    async fn list_devices(&self, user: UserId) -> Result<Vec<KnownDevice>, RepoError>;
}

/// Grants (token families) and their refresh tokens.
#[async_trait]
pub trait TokenFamilyRepo: Send + Sync {
    /// Inserts the family and its first refresh token (if any) in one transaction.
    async fn create_family(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
    ) -> Result<(), RepoError>;
    /// [`Self::create_family`] for a code exchange: written only if the
    /// family's user exists and is active, as read in the same transaction,
    /// and that user given back, with the organizations they belong to and
    /// their roles there when `with_organizations` (in the order of
    /// [`UserRepo::find_with_organizations`]); `None`, with nothing written,
    /// when the user is unknown or not active.
    async fn create_family_of_active_user(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
        with_organizations: bool,
    ) -> Result<Option<(User, Option<UserOrganizations>)>, RepoError>;
    async fn find_family(&self, id: Uuid) -> Result<Option<TokenFamily>, RepoError>;
    /// The user of family `id` when the family exists and is not revoked,
    /// else `None`: the check every access token of a grant goes through,
    /// and the account it stands for, in one read.
    async fn find_user_of_unrevoked_family(&self, id: Uuid) -> Result<Option<User>, RepoError>;
    /// [`Self::find_user_of_unrevoked_family`] with the organizations the
    /// user belongs to and their roles there, in the order the user joined
    /// them (userinfo's `organizations` claim), in one read.
    async fn find_user_and_organizations_of_unrevoked_family(
        &self,
        id: Uuid,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError>;
    /// Marks the family revoked (first reason wins); returns whether this call
    /// revoked it. Its refresh tokens stop working with it.
    async fn revoke_family(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool, RepoError>;
    /// Revokes every live family born of SSO session `sid`; returns their ids.
    async fn revoke_families_of_session(
        &self,
        sid: &str,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<Vec<Uuid>, RepoError>;
    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<RefreshTokenRecord>, RepoError>;
    /// The refresh token of hash `hash` with its family and the family's
    /// user, in one read (the refresh grant, introspection, revocation).
    async fn find_refresh_token_grant(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, TokenFamily, User)>, RepoError>;
    /// Atomically marks `old` used and inserts `new` in the same family.
    /// Returns `false` (and inserts nothing) when `old` was already used:
    /// of two concurrent rotations exactly one succeeds.
    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
    ) -> Result<bool, RepoError>;
    /// [`Self::rotate_refresh_token`] that also reads the family's `user`
    /// with their organizations, in the same transaction.
    async fn rotate_refresh_token_reading_user(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
        user: UserId,
    ) -> Result<RotationWithUser, RepoError>;
}

/// The outcome of [`TokenFamilyRepo::rotate_refresh_token_reading_user`].
#[derive(Debug)]
pub enum RotationWithUser {
    /// `old` was already used: nothing written.
    Lost,
    /// Rotated; the user with their organizations, or `None` when the user
    /// is unknown or not active.
    Won(Option<Box<(User, UserOrganizations)>>),
}

/// Token signing keys.
#[async_trait]
pub trait SigningKeyRepo: Send + Sync {
    /// All keys, oldest first.
    async fn list(&self) -> Result<Vec<StoredSigningKey>, RepoError>;
    async fn create(&self, key: &StoredSigningKey) -> Result<(), RepoError>;
    /// Sets `retired_at` on a key that has none.
    async fn retire(&self, kid: &str, at: OffsetDateTime) -> Result<(), RepoError>;
}

/// Consents given by users to clients.
#[async_trait]
pub trait ConsentRepo: Send + Sync {
    async fn find(&self, user: UserId, client: &ClientId) -> Result<Option<Consent>, RepoError>;
    /// Creates or replaces.
    async fn upsert(&self, consent: &Consent) -> Result<(), RepoError>;
}

/// The audit trail.
#[async_trait]
pub trait AuditRepo: Send + Sync {
    async fn record(&self, event: &AuditEvent) -> Result<(), RepoError>;
    /// A user's most recent events, newest first.
    async fn list_for_user(&self, user: UserId, limit: u64) -> Result<Vec<AuditEvent>, RepoError>;
    /// An organization's most recent events (`org_id` set), newest first.
    async fn list_for_org(&self, org: OrgId, limit: u64) -> Result<Vec<AuditEvent>, RepoError>;
}

/// Organizations and their members.
#[async_trait]
pub trait OrgRepo: Send + Sync {
    /// Inserts the organization and its creator's membership in one transaction.
    /// A SIRET already registered by a pending or validated organization gives
    /// [`RepoError::Conflict`] and writes nothing.
    async fn create_org(&self, org: &Organization, creator: &Membership) -> Result<(), RepoError>;
    async fn find_org(&self, id: OrgId) -> Result<Option<Organization>, RepoError>;
    /// Organizations ordered by creation time, optionally of one status.
    async fn list_orgs(
        &self,
        status: Option<OrgStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Organization>, RepoError>;
    /// Moves an organization from `expected` to `new` status (compare-and-swap,
    /// sets `decided_at`). Returns whether it moved.
    async fn set_status(
        &self,
        id: OrgId,
        expected: OrgStatus,
        new: OrgStatus,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
    /// Replaces the security settings (enforced MFA kinds, password policy).
    async fn update_security(
        &self,
        id: OrgId,
        mfa_required_for: &[String],
        password_policy: &crate::password_policy::PasswordPolicy,
    ) -> Result<(), RepoError>;
    /// Adds a member; already a member gives [`RepoError::Conflict`].
    async fn add_member(&self, m: &Membership) -> Result<(), RepoError>;
    async fn find_membership(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Membership>, RepoError>;
    /// Members ordered by the time they joined.
    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, RepoError>;
    /// Every organization a user belongs to.
    async fn memberships_of(&self, user: UserId) -> Result<Vec<Membership>, RepoError>;
    /// Returns whether the membership existed.
    async fn set_roles(&self, org: OrgId, user: UserId, roles: &[Role]) -> Result<bool, RepoError>;
    /// Returns whether the membership existed.
    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<bool, RepoError>;
}

/// Runtime state of registered clients.
#[async_trait]
pub trait ClientStateRepo: Send + Sync {
    /// Records that `client` obtained tokens at `at` (creates the row on first use).
    async fn touch(&self, client: &ClientId, at: OffsetDateTime) -> Result<(), RepoError>;
    async fn find(&self, client: &ClientId) -> Result<Option<ClientState>, RepoError>;
}

/// The webhook outbox: deliveries waiting to be sent, being sent, or done.
/// See [`crate::webhooks`].
#[async_trait]
pub trait WebhookRepo: Send + Sync {
    /// Inserts the deliveries of one event (one per subscribed endpoint) in
    /// one transaction: all or none.
    async fn enqueue(
        &self,
        deliveries: &[crate::webhooks::WebhookDelivery],
    ) -> Result<(), RepoError>;
    /// Claims at most `limit` pending deliveries due at `now` (`next_attempt_at
    /// <= now`) that no one holds (no lease, or an expired one), earliest due
    /// first, leasing each until `lease_until`. Of several concurrent
    /// claimers (other nodes) each delivery goes to one.
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<crate::webhooks::WebhookDelivery>, RepoError>;
    /// Marks a claimed delivery delivered, if it is still pending after
    /// `attempts` attempts (nobody else finished it meanwhile). Returns
    /// whether it did.
    async fn mark_delivered(
        &self,
        id: Uuid,
        attempts: u32,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
    /// Records a failed attempt of a claimed delivery (still pending after
    /// `attempts` attempts): it is tried again at `retry_at`, or, with
    /// `None`, given up (`failed`). Releases the lease. Returns whether it did.
    async fn mark_failed(
        &self,
        id: Uuid,
        attempts: u32,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<bool, RepoError>;
    /// The latest deliveries, newest first, optionally of one status.
    async fn list_deliveries(
        &self,
        status: Option<crate::webhooks::DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<crate::webhooks::WebhookDelivery>, RepoError>;
}

/// Links between upstream identities and local accounts (federation). See
/// [`crate::federation`].
#[async_trait]
pub trait FederatedIdentityRepo: Send + Sync {
    /// The link of `subject` at `upstream`, if any.
    async fn find_identity(
        &self,
        upstream: &str,
        subject: &str,
    ) -> Result<Option<crate::federation::FederatedIdentity>, RepoError>;
    /// A user's links, oldest first.
    async fn list_identities(
        &self,
        user: UserId,
    ) -> Result<Vec<crate::federation::FederatedIdentity>, RepoError>;
    /// Links an identity. The identity already linked (to anyone), or the
    /// user already linked at that upstream, gives [`RepoError::Conflict`]
    /// and writes nothing.
    async fn create_identity(
        &self,
        identity: &crate::federation::FederatedIdentity,
    ) -> Result<(), RepoError>;
    /// Unlinks `user`'s identity at `upstream`; returns whether one existed.
    async fn delete_identity(&self, user: UserId, upstream: &str) -> Result<bool, RepoError>;
    /// Records a sign-in through the link.
    async fn touch_identity(
        &self,
        upstream: &str,
        subject: &str,
        at: OffsetDateTime,
    ) -> Result<(), RepoError>;
}
