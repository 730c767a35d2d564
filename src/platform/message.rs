//! The XML of Open Platform pushes: the outer envelope (`AppId`,
//! `Encrypt`) and the decrypted event (`InfoType` and its fields). Both
//! are one `<xml>` element of flat children; anything else (nesting,
//! DTDs, unknown entities, a second root) is refused rather than guessed.

use quick_xml::events::Event;
use quick_xml::Reader;

/// More children than any push has: a document with more is not one.
const MAX_FIELDS: usize = 64;

/// The children of the root element, in order, with their text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a flat <xml> document")]
pub struct NotXml;

/// Parses `<xml><A>..</A><B><![CDATA[..]]></B></xml>`.
pub fn parse(text: &[u8]) -> Result<Fields, NotXml> {
    let text = std::str::from_utf8(text).map_err(|_| NotXml)?;
    let mut reader = Reader::from_str(text);
    let mut fields = Vec::new();
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut current: Option<(String, String)> = None;
    loop {
        match reader.read_event().map_err(|_| NotXml)? {
            Event::Start(start) => {
                depth += 1;
                match depth {
                    1 if !seen_root && start.name().as_ref() == b"xml" => seen_root = true,
                    2 if fields.len() < MAX_FIELDS => {
                        let name = std::str::from_utf8(start.name().as_ref())
                            .map_err(|_| NotXml)?
                            .to_owned();
                        current = Some((name, String::new()));
                    }
                    _ => return Err(NotXml),
                }
            }
            Event::Empty(start) => {
                if depth != 1 || fields.len() >= MAX_FIELDS {
                    return Err(NotXml);
                }
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(|_| NotXml)?
                    .to_owned();
                fields.push((name, String::new()));
            }
            Event::End(_) => {
                if depth == 2 {
                    fields.push(current.take().ok_or(NotXml)?);
                }
                depth = depth.checked_sub(1).ok_or(NotXml)?;
            }
            Event::Text(text) => {
                let value = text.decode().map_err(|_| NotXml)?;
                match &mut current {
                    Some((_, buffer)) if depth == 2 => buffer.push_str(&value),
                    _ if value.trim().is_empty() => {}
                    _ => return Err(NotXml),
                }
            }
            Event::CData(data) => match &mut current {
                Some((_, buffer)) if depth == 2 => {
                    buffer.push_str(&data.decode().map_err(|_| NotXml)?)
                }
                _ => return Err(NotXml),
            },
            Event::GeneralRef(reference) => {
                let Some((_, buffer)) = current.as_mut().filter(|_| depth == 2) else {
                    return Err(NotXml);
                };
                let resolved = match reference.resolve_char_ref().map_err(|_| NotXml)? {
                    Some(c) => c,
                    None => match &*reference as &[u8] {
                        b"lt" => '<',
                        b"gt" => '>',
                        b"amp" => '&',
                        b"quot" => '"',
                        b"apos" => '\'',
                        _ => return Err(NotXml),
                    },
                };
                buffer.push(resolved);
            }
            Event::Decl(_) | Event::Comment(_) => {}
            Event::DocType(_) | Event::PI(_) => return Err(NotXml),
            Event::Eof => break,
        }
    }
    if !seen_root || depth != 0 {
        return Err(NotXml);
    }
    Ok(Fields(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_fields_with_cdata_and_entities() {
        let fields = parse(
            b"<?xml version=\"1.0\"?><xml>\n <AppId><![CDATA[wx1]]></AppId>\n <CreateTime>17</CreateTime><Note>a&amp;b&#33;</Note><Empty/></xml>",
        )
        .unwrap();
        assert_eq!(fields.get("AppId"), Some("wx1"));
        assert_eq!(fields.get("CreateTime"), Some("17"));
        assert_eq!(fields.get("Note"), Some("a&b!"));
        assert_eq!(fields.get("Empty"), Some(""));
        assert_eq!(fields.get("Missing"), None);
    }

    #[test]
    fn refuses_what_is_not_a_push() {
        for text in [
            &b""[..],
            b"{\"json\":1}",
            b"<xml><A>1</A>",
            b"<xml><A><B>1</B></A></xml>",
            b"<other><A>1</A></other>",
            b"<xml><A>1</A></xml><xml></xml>",
            b"<!DOCTYPE x [<!ENTITY e \"boom\">]><xml><A>&e;</A></xml>",
            b"<xml><A>&e;</A></xml>",
            b"<xml>stray<A>1</A></xml>",
            b"\xff\xfe<xml/>",
        ] {
            assert_eq!(
                parse(text),
                Err(NotXml),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
