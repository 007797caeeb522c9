fn main() {
    minijinja_embed::embed_templates!("../themes/default/templates");
}
