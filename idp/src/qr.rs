//! QR codes of device authorization links (RFC 8628 §3.3.1): as SVG for the
//! user-code page, as terminal text for `idp demo`.

use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of quiet zone around the code (ISO/IEC 18004 asks for 4).
const BORDER: i32 = 4;

fn encode(text: &str) -> Option<QrCode> {
    QrCode::encode_text(text, QrCodeEcc::Medium).ok()
}

/// `text` as a standalone SVG image (black modules on white, one path).
pub fn svg(text: &str) -> Option<String> {
    let qr = encode(text)?;
    let size = qr.size() + BORDER * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + BORDER, y + BORDER));
            }
        }
    }
    Some(format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" viewBox="0 0 {size} {size}" stroke="none" shape-rendering="crispEdges">"#,
            r##"<rect width="100%" height="100%" fill="#FFFFFF"/>"##,
            r##"<path d="{path}" fill="#000000"/>"##,
            "</svg>"
        ),
        size = size,
        path = path,
    ))
}

/// `text` as lines of half-block characters (two rows of modules per
/// line): light modules drawn, dark ones left blank, so it reads right on
/// a light-on-dark terminal (and inverted, which most scanners accept, on
/// a dark-on-light one); with a quiet zone.
pub fn terminal(text: &str) -> Option<String> {
    let qr = encode(text)?;
    let dark = |x: i32, y: i32| qr.get_module(x, y);
    let mut out = String::new();
    let (from, to) = (-BORDER / 2, qr.size() + BORDER / 2);
    let mut y = from;
    while y < to {
        for x in from..to {
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (true, true) => ' ',
                (true, false) => '▄',
                (false, true) => '▀',
                (false, false) => '█',
            });
        }
        out.push('\n');
        y += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn svg_and_terminal_renderings_hold_the_text() {
        let url = "http://127.0.0.1:8080/device?user_code=BCDF-GHJK";
        let svg = super::svg(url).expect("encodes");
        assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>"));
        assert!(svg.contains("<path d=\"M"));
        let term = super::terminal(url).expect("encodes");
        let lines: Vec<&str> = term.lines().collect();
        assert!(lines.len() > 10);
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count())
        );
    }
}
