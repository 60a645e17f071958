//! The identity in a client certificate, for `[mqtt] use_identity_as_username`: the subject's
//! common name (CN), or, without one, the first DNS, e-mail or URI subject alternative name.
//!
//! The certificate was already verified by rustls against `tls_client_ca`; this only reads
//! two fields of its DER. The reader walks tag-length-value items iteratively with every length
//! checked against the bytes that are there (no recursion, no allocation beyond the result).

/// One DER item: its tag, its contents and what follows it.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    rest: &'a [u8],
}

/// Reads the item at the start of `input` (single-byte tags, definite lengths up to 4 bytes).
fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    let (value, rest) = input.split_at(len);
    Some(Tlv { tag, value, rest })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
/// 2.5.4.3, commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The user name a client certificate (DER) stands for; `None` when it has neither a CN nor a
/// usable subject alternative name.
pub fn identity(der: &[u8]) -> Option<String> {
    let certificate = tlv(der).filter(|t| t.tag == SEQUENCE)?;
    let tbs = tlv(certificate.value).filter(|t| t.tag == SEQUENCE)?;
    let mut fields = tbs.value;
    let mut index = 0;
    let mut subject = None;
    let mut extensions = None;
    while !fields.is_empty() {
        let field = tlv(fields)?;
        fields = field.rest;
        match field.tag {
            0xa0 => continue, // [0] version: not counted
            0xa3 => extensions = Some(field.value),
            _ => {
                // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
                if index == 4 {
                    subject = Some(field.value);
                }
                index += 1;
            }
        }
    }
    subject
        .and_then(common_name)
        .or_else(|| extensions.and_then(alternative_name))
}

/// The first CN in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let rdn = tlv(name).filter(|t| t.tag == SET)?;
        name = rdn.rest;
        let mut attributes = rdn.value;
        while !attributes.is_empty() {
            let attribute = tlv(attributes).filter(|t| t.tag == SEQUENCE)?;
            attributes = attribute.rest;
            let oid = tlv(attribute.value).filter(|t| t.tag == OID)?;
            if oid.value == OID_CN {
                let value = tlv(oid.rest)?;
                return text(value.value);
            }
        }
    }
    None
}

/// The first dNSName, rfc822Name or URI of the subjectAltName extension.
fn alternative_name(explicit: &[u8]) -> Option<String> {
    let list = tlv(explicit).filter(|t| t.tag == SEQUENCE)?;
    let mut extensions = list.value;
    while !extensions.is_empty() {
        let extension = tlv(extensions).filter(|t| t.tag == SEQUENCE)?;
        extensions = extension.rest;
        let oid = tlv(extension.value).filter(|t| t.tag == OID)?;
        if oid.value != OID_SAN {
            continue;
        }
        let mut after = tlv(oid.rest)?;
        if after.tag == 0x01 {
            after = tlv(after.rest)?; // critical BOOLEAN
        }
        if after.tag != OCTET_STRING {
            return None;
        }
        let names = tlv(after.value).filter(|t| t.tag == SEQUENCE)?;
        let mut names = names.value;
        while !names.is_empty() {
            let name = tlv(names)?;
            names = name.rest;
            // [1] rfc822Name, [2] dNSName, [6] uniformResourceIdentifier (IA5String, implicit)
            if matches!(name.tag, 0x81 | 0x82 | 0x86) {
                return text(name.value);
            }
        }
    }
    None
}

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Edge");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_is_the_identity() {
        let der = cert(
            Some("sensor-17"),
            vec![rcgen::SanType::DnsName("x.example".try_into().unwrap())],
        );
        assert_eq!(identity(&der).as_deref(), Some("sensor-17"));
    }

    #[test]
    fn without_a_common_name_the_first_alternative_name_is() {
        let der = cert(
            None,
            vec![rcgen::SanType::DnsName("gw-3.example".try_into().unwrap())],
        );
        assert_eq!(identity(&der).as_deref(), Some("gw-3.example"));
        assert_eq!(identity(&cert(None, vec![])), None);
    }

    #[test]
    fn truncated_or_garbage_input_is_refused_not_panicked_on() {
        let der = cert(Some("a"), vec![]);
        for cut in 0..der.len() {
            let _ = identity(&der[..cut]);
        }
        assert_eq!(identity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(identity(&[]), None);
    }
}
