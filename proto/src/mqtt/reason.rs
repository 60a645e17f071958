//! [`ReasonCode`]: the MQTT 5.0 reason codes (spec 2.4) and their 3.1.1 equivalents.

/// Every MQTT 5.0 reason code, with the spec's value. Value 0x00 has three names in the spec
/// (Success, Normal disconnection, Granted QoS 0); see the associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00,
    /// 0x01 Granted QoS 1.
    GrantedQoS1 = 0x01,
    /// 0x02 Granted QoS 2.
    GrantedQoS2 = 0x02,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18 Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19 Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82 Protocol Error.
    ProtocolError = 0x82,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87 Not authorized.
    NotAuthorized = 0x87,
    /// 0x88 Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89 Server busy.
    ServerBusy = 0x89,
    /// 0x8A Banned.
    Banned = 0x8A,
    /// 0x8B Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96 Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98 Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D Server moved.
    ServerMoved = 0x9D,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// All reason codes, in value order.
pub const ALL: [ReasonCode; 43] = {
    use ReasonCode::*;
    [
        Success,
        GrantedQoS1,
        GrantedQoS2,
        DisconnectWithWillMessage,
        NoMatchingSubscribers,
        NoSubscriptionExisted,
        ContinueAuthentication,
        ReAuthenticate,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNameOrPassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        ServerShuttingDown,
        BadAuthenticationMethod,
        KeepAliveTimeout,
        SessionTakenOver,
        TopicFilterInvalid,
        TopicNameInvalid,
        PacketIdentifierInUse,
        PacketIdentifierNotFound,
        ReceiveMaximumExceeded,
        TopicAliasInvalid,
        PacketTooLarge,
        MessageRateTooHigh,
        QuotaExceeded,
        AdministrativeAction,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        SharedSubscriptionsNotSupported,
        ConnectionRateExceeded,
        MaximumConnectTime,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ]
};

/// Reason codes a CONNACK may carry (spec 3.2.2.2).
pub const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// Reason codes a PUBACK or PUBREC may carry (spec 3.4.2.1, 3.5.2.1).
pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Reason codes a PUBREL or PUBCOMP may carry (spec 3.6.2.1, 3.7.2.1).
pub const PUBREL: &[u8] = &[0x00, 0x92];
/// Reason codes a SUBACK may carry (spec 3.9.3).
pub const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// Reason codes an UNSUBACK may carry (spec 3.11.3).
pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// Reason codes a DISCONNECT may carry (spec 3.14.2.1).
pub const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// Reason codes an AUTH may carry (spec 3.15.2.1).
pub const AUTH: &[u8] = &[0x00, 0x18, 0x19];

impl ReasonCode {
    /// 0x00 under its DISCONNECT name.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 under its SUBACK name.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The wire value.
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The reason code with this wire value, if the spec defines one.
    pub fn from_u8(value: u8) -> Option<ReasonCode> {
        ALL.iter().copied().find(|c| c.value() == value)
    }

    /// True for codes below 0x80 (success or informational).
    pub const fn is_success(self) -> bool {
        (self as u8) < 0x80
    }

    /// The spec's name for this code.
    pub const fn name(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Success => "Success",
            GrantedQoS1 => "Granted QoS 1",
            GrantedQoS2 => "Granted QoS 2",
            DisconnectWithWillMessage => "Disconnect with Will Message",
            NoMatchingSubscribers => "No matching subscribers",
            NoSubscriptionExisted => "No subscription existed",
            ContinueAuthentication => "Continue authentication",
            ReAuthenticate => "Re-authenticate",
            UnspecifiedError => "Unspecified error",
            MalformedPacket => "Malformed Packet",
            ProtocolError => "Protocol Error",
            ImplementationSpecificError => "Implementation specific error",
            UnsupportedProtocolVersion => "Unsupported Protocol Version",
            ClientIdentifierNotValid => "Client Identifier not valid",
            BadUserNameOrPassword => "Bad User Name or Password",
            NotAuthorized => "Not authorized",
            ServerUnavailable => "Server unavailable",
            ServerBusy => "Server busy",
            Banned => "Banned",
            ServerShuttingDown => "Server shutting down",
            BadAuthenticationMethod => "Bad authentication method",
            KeepAliveTimeout => "Keep Alive timeout",
            SessionTakenOver => "Session taken over",
            TopicFilterInvalid => "Topic Filter invalid",
            TopicNameInvalid => "Topic Name invalid",
            PacketIdentifierInUse => "Packet Identifier in use",
            PacketIdentifierNotFound => "Packet Identifier not found",
            ReceiveMaximumExceeded => "Receive Maximum exceeded",
            TopicAliasInvalid => "Topic Alias invalid",
            PacketTooLarge => "Packet too large",
            MessageRateTooHigh => "Message rate too high",
            QuotaExceeded => "Quota exceeded",
            AdministrativeAction => "Administrative action",
            PayloadFormatInvalid => "Payload format invalid",
            RetainNotSupported => "Retain not supported",
            QoSNotSupported => "QoS not supported",
            UseAnotherServer => "Use another server",
            ServerMoved => "Server moved",
            SharedSubscriptionsNotSupported => "Shared Subscriptions not supported",
            ConnectionRateExceeded => "Connection rate exceeded",
            MaximumConnectTime => "Maximum connect time",
            SubscriptionIdentifiersNotSupported => "Subscription Identifiers not supported",
            WildcardSubscriptionsNotSupported => "Wildcard Subscriptions not supported",
        }
    }

    /// The MQTT 3.1.1 CONNACK return code (0..=5) closest to this reason code. Total: every
    /// error without a 3.1.1 equivalent becomes 3 "Server unavailable".
    pub const fn to_v3_connack(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUserNameOrPassword | BadAuthenticationMethod => 4,
            NotAuthorized | Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for a MQTT 3.1.1 CONNACK return code, if it is one of 0..=5.
    pub const fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        match code {
            0 => Some(Success),
            1 => Some(UnsupportedProtocolVersion),
            2 => Some(ClientIdentifierNotValid),
            3 => Some(ServerUnavailable),
            4 => Some(BadUserNameOrPassword),
            5 => Some(NotAuthorized),
            _ => None,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub const fn to_v3_suback(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            GrantedQoS1 => 1,
            GrantedQoS2 => 2,
            _ => 0x80,
        }
    }

    /// The reason code for a MQTT 3.1.1 SUBACK return code (0, 1, 2 or 0x80).
    pub const fn from_v3_suback(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        match code {
            0 => Some(Success),
            1 => Some(GrantedQoS1),
            2 => Some(GrantedQoS2),
            0x80 => Some(UnspecifiedError),
            _ => None,
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), self.value())
    }
}
