//! sea-orm entities: one module per table.

pub mod account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub login_id: String,
        #[sea_orm(unique)]
        pub login_normalized: String,
        pub email: String,
        pub phone: Option<String>,
        pub password_hash: String,
        pub password_changed_at: Option<DateTimeUtc>,
        /// Bumped by every password change: the compare-and-set guard of resets.
        pub password_version: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// HMAC of the device token of the browser that last reset the password (the token
        /// itself is never stored); `None`: no known device.
        pub device_token_mac: Option<String>,
        pub device_token_expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod password_history {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "password_history")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub account_id: String,
        pub password_hash: String,
        /// The flow that set it: unique, so one reset token can never write twice.
        #[sea_orm(unique)]
        pub recovery_flow_id: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTimeUtc,
        pub event: String,
        pub account_id: Option<String>,
        pub flow_id: Option<String>,
        pub login_key: Option<String>,
        pub client_ip: Option<String>,
        pub user_agent: Option<String>,
        pub result: String,
        pub detail: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub event_type: String,
        pub aggregate_id: String,
        pub payload: String,
        pub created_at: DateTimeUtc,
        pub published_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        /// ChaCha20-Poly1305 sealed payload: the queue never holds a plaintext code.
        pub ciphertext: Vec<u8>,
        pub not_after: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub attempts: i32,
        pub next_attempt_at: DateTimeUtc,
        pub locked_until: Option<DateTimeUtc>,
        /// pending | delivered | dropped
        pub status: String,
        pub finished_at: Option<DateTimeUtc>,
        pub last_error: Option<String>,
        /// Whose message it is (the payload is sealed): an erasure drops the account's mail.
        pub account_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
