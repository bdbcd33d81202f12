//! Masked destinations (`j***n@e***.com`): enough for a person to recognise their own address,
//! too little to learn someone else's.

/// `john@example.com` -> `j***n@e***.com`. Short parts keep only their first character.
pub fn mask_email(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return mask_part(address);
    };
    let (host, tld) = match domain.rsplit_once('.') {
        Some((host, tld)) => (host, Some(tld)),
        None => (domain, None),
    };
    let mut masked = format!("{}@{}", mask_part(local), first_char_then_stars(host));
    if let Some(tld) = tld {
        masked.push('.');
        masked.push_str(tld);
    }
    masked
}

fn first_char_then_stars(part: &str) -> String {
    let first: String = part.chars().take(1).collect();
    format!("{first}***")
}

fn mask_part(part: &str) -> String {
    let chars: Vec<char> = part.chars().collect();
    match chars.as_slice() {
        [] => "***".to_owned(),
        [first] | [first, _] => format!("{first}***"),
        [first, .., last] => format!("{first}***{last}"),
    }
}

/// `+46701234567` -> `+*******4567`: the last four digits, like bank statements.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let keep = 4.min(chars.len());
    let hidden = chars.len() - keep;
    let mut masked = String::with_capacity(chars.len());
    for (index, c) in chars.iter().enumerate() {
        if index < hidden && c.is_ascii_digit() {
            masked.push('*');
        } else {
            masked.push(*c);
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_masked_like_the_spec_example() {
        assert_eq!(mask_email("john@example.com"), "j***n@e***.com");
    }

    #[test]
    fn short_local_parts_reveal_one_character() {
        assert_eq!(mask_email("jo@mail.example.org"), "j***@m***.org");
        assert_eq!(mask_email("j@x.io"), "j***@x***.io");
    }

    #[test]
    fn a_phone_keeps_only_its_last_four_digits() {
        assert_eq!(mask_phone("+46701234567"), "+*******4567");
    }
}
